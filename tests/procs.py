"""Helpers for tests that start real processes (workers, the device-channel service) on the
test database and the configured broker."""

import os
from pathlib import Path

from django.db import connection

from evpay.testbed.supervisor import Child, free_port, worker_command

__all__ = ["ROOT", "Proc", "celery_worker", "free_port", "process_env", "purge_broker"]

ROOT = Path(__file__).resolve().parent.parent


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


class Proc(Child):
    """A child process on the test database, logging to var/test-logs, stopped on exit."""

    def __init__(self, argv, log_name: str, **env):
        super().__init__(log_name, argv, ROOT / "var" / "test-logs", process_env(**env), cwd=ROOT)


def celery_worker(name: str, concurrency: int = 2) -> Proc:
    proc = Proc(worker_command(concurrency, f"{name}@%h") + ["--without-heartbeat"], log_name=name)
    proc.wait_for_log("ready.")
    return proc


def purge_broker() -> None:
    from evpay.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")
