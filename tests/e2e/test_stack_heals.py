"""The stack as `make run` starts it heals: the Celery worker on the embedded broker is killed
(SIGKILL, like the JSONDecodeError crash of issue #14 or the OOM killer), the supervisor says
so and starts it again, everything else keeps running, and sessions are still captured; then
the same for the in-memory emulator."""

import json
import os
import re
import signal
import sqlite3
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from tests.e2e.stack import emulator_base, group_alive, start_stack, stop_stack
from tests.procs import free_port

pytestmark = pytest.mark.slow


def _wait(predicate, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_or_emulator_is_restarted_and_sessions_are_still_captured(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    db_path = tmp_path / "heal.sqlite3"
    env = dict(os.environ)
    env.update(
        {
            "EVPAY_VAR_DIR": str(var),
            "DEBUG": "1",
            "EVPAY_PORT": str(free_port()),
            "EVPAY_EMULATOR_BASE_PORT": str(emulator_base(4)),  # 3 + the external charger's
            "EVPAY_OCPP_PORT": str(free_port()),
            "EVPAY_EMULATOR_CONTROL_PORT": str(free_port()),
            "EVPAY_DEVICE_CHANNEL_PORT": str(free_port()),
            "EVPAY_DEMO_TERMINALS": "3",
            "EVPAY_DEMO_SPEED": "4",
            "EVPAY_ADMIN_PASSWORD": "heal-admin-password-123",
            "DATABASE_URL": f"sqlite:///{db_path}",
            # The embedded default under test, whatever broker the rest of the suite uses.
            "CELERY_BROKER_URL": "filesystem://",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("EVPAY_REQUIRE_SERVICES", None)
    out_path = var / "runstack.out"
    stack, out = start_stack(env, out_path)

    def text():
        assert stack.poll() is None, out_path.read_text()
        return out_path.read_text()

    def db(sql, *params):
        with sqlite3.connect(db_path, timeout=30) as conn:
            return conn.execute(sql, params).fetchone()[0]

    def captured_since(moment: str) -> int:
        return db(
            "SELECT COUNT(*) FROM charging_chargingsession "
            "WHERE close_reason = 'captured' AND closed_at > ?",
            moment,
        )

    try:
        _wait(lambda: "Stop:" in text(), "the stack to come up", 180)
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", text())}
        worker_log = var / "log" / "worker.log"
        _wait(lambda: "ready." in worker_log.read_text(), "the worker", 120)
        # Start-up: brands fetched for every seeded terminal, once the worker is up.
        _wait(
            lambda: db("SELECT COUNT(*) FROM evpay_jobrun WHERE triggered_by = 'start-up'") >= 3,
            "the start-up brand refresh",
            120,
        )
        _wait(lambda: captured_since("") >= 1, "a first captured session", 240)

        killed_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        os.killpg(pids["worker"], signal.SIGKILL)
        _wait(
            lambda: "worker was killed by SIGKILL; restarting in 1 s (restart 1 today)" in text(),
            "the supervisor to report the crash",
            30,
        )
        _wait(lambda: worker_log.read_text().count("ready.") >= 2, "a new worker", 120)
        others = {name: pid for name, pid in pids.items() if name != "worker"}
        assert all(group_alive(pid) for pid in others.values()), "the others kept running"
        assert "exited with code" not in text(), text()
        _wait(lambda: captured_since(killed_at) >= 1, "a session captured after the kill", 300)

        # The emulator holds its terminals in memory: restarted, it serves the same terminals
        # on the same ports (idle, empty ledger), and charging goes on.
        killed_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        os.killpg(pids["emulator"], signal.SIGKILL)
        _wait(
            lambda: "emulator was killed by SIGKILL; restarting in 1 s (restart 1 today)" in text(),
            "the supervisor to restart the emulator",
            30,
        )
        control = f"http://127.0.0.1:{env['EVPAY_EMULATOR_CONTROL_PORT']}/terminals"

        def terminals():
            try:
                with urllib.request.urlopen(control, timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                return None

        listed = _wait(terminals, "the emulator's control API", 60)
        assert len(listed) == 4, listed  # the 3 demo terminals and the external charger's
        _wait(
            lambda: captured_since(killed_at) >= 1,
            "a session captured after the emulator restarted",
            300,
        )
    finally:
        stop_stack(stack, out)
    final = out_path.read_text()
    assert "All processes stopped." in final, final[-2000:]
    state = json.loads((var / "supervisor.json").read_text())
    assert state["stopped"] and state["children"]["worker"]["restarts_today"] == 1
    assert state["children"]["emulator"]["restarts_today"] == 1
    pids |= {name: child["pid"] for name, child in state["children"].items()}
    assert [name for name, pid in pids.items() if group_alive(pid)] == []
