"""Helpers for tests that start real processes (workers, the device-channel service) on the
test database and the configured broker."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_url() -> str:
    """DATABASE_URL of the database this test run uses (the test database, not the real one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"DATABASE_URL": test_database_url(), "DEBUG": "1", "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A child process in its own process group, stopped (or killed) on exit."""

    def __init__(self, argv, log_name: str, **env):
        self.log_path = ROOT / "var" / "test-logs" / f"{log_name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=process_env(**env), stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen in {self.log_path}:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def celery_worker(name: str, concurrency: int = 2) -> Proc:
    proc = Proc(
        [sys.executable, "-m", "celery", "-A", "evpay", "worker", "--loglevel", "INFO",
         "--pool", "threads", "--concurrency", str(concurrency), "--hostname", f"{name}@%h",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        log_name=name,
    )  # fmt: skip
    proc.wait_for_log("ready.")
    return proc


def purge_broker() -> None:
    from evpay.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")
