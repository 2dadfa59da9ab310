"""Child processes for runstack and soak: own process group each, logs to files, stopped
gracefully then killed, and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

PYTHON = sys.executable
MANAGE = [PYTHON, str(Path(settings.BASE_DIR) / "manage.py")]
CELERY = [PYTHON, "-m", "celery", "-A", "evpay"]


def free_port() -> int:
    """A port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_command(concurrency: int, hostname: str | None = None) -> list[str]:
    """A Celery worker as every launcher here runs it: threads (authorisations wait minutes
    for a driver), no gossip or mingle (nothing uses them)."""
    command = CELERY + [
        "worker",
        "--loglevel",
        "INFO",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
    ]
    return command + (["--hostname", hostname] if hostname else [])


class Child:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict | None = None,
        cwd: Path | None = None,
    ):
        self.name, self.argv = name, argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait_stopped()
        # Logs are appended across runs: only what this process writes counts as its output.
        self._log_start = self._log.tell()
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        stop_all([self])

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

    def output(self) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
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
