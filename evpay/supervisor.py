"""Child processes for runstack and soak: own process group each, logs to files, stopped
gracefully then killed, and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

PYTHON = sys.executable
MANAGE = [PYTHON, str(Path(settings.BASE_DIR) / "manage.py")]
CELERY = [PYTHON, "-m", "celery", "-A", "evpay"]


class Child:
    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None):
        self.name, self.argv = name, argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.popen.terminate()

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup, exactly like a crashed host."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    def wait_stopped(self, deadline: float) -> bool:
        try:
            self.popen.wait(max(0.1, deadline - time.monotonic()))
            stopped = True
        except subprocess.TimeoutExpired:
            stopped = False
        # Whatever is left in the group (pool children of a leader) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()
        self._log.close()
        return stopped

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if not self.alive():
                break
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not report {text!r}; see {self.log_path}")


def stop_all(children: list[Child], grace: float = 20) -> list[str]:
    """Graceful SIGTERM to every leader, then SIGKILL stragglers; returns who needed killing."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    return [child.name for child in children if not child.wait_stopped(deadline)]
