"""The supervisor behind `make run`, on real child processes: a child that exits is restarted
with exponential backoff and a clear line, one that keeps crashing is reported loudly, and only
SIGTERM stops everything (every child with it)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.procs import ROOT

CRASH = f"{sys.executable} -c 'import sys, time; time.sleep(0.1); sys.exit(3)'"
STEADY = f"{sys.executable} -c 'import time; time.sleep(600)'"
RESTART = re.compile(
    r"(\w+) exited with code (-?\d+); restarting in ([\d.]+) s \(restart (\d+) today\)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class SupervisorProcess:
    def __init__(self, tmp_path, *programs, **options):
        self.out_path = tmp_path / "supervisor.out"
        self.state_path = tmp_path / "supervisor.json"
        args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "evpay.testbed.supervisor", "--log-dir", str(tmp_path)]
            + ["--state-file", str(self.state_path), *args, *programs],
            cwd=ROOT,
            env={**os.environ, "DEBUG": "1", "PYTHONUNBUFFERED": "1"},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_for(self, predicate, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.output()):
                return
            assert self.popen.poll() is None, f"the supervisor exited: {self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.output()}")

    def state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(30)
        finally:
            self._out.close()


@pytest.fixture
def supervise(tmp_path):
    started = []

    def start(*programs, **options):
        proc = SupervisorProcess(tmp_path, *programs, **options)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()


def test_a_crashing_child_is_restarted_with_doubling_backoff_and_a_clear_line(supervise):
    sup = supervise(f"crasher={CRASH}", f"steady={STEADY}", backoff_base=0.2, backoff_max=0.8)
    sup.wait_for(lambda out: "(restart 4 today)" in out, "four restarts")
    restarts = RESTART.findall(sup.output())
    assert [(name, code, delay, n) for name, code, delay, n in restarts[:4]] == [
        ("crasher", "3", "0.2", "1"),
        ("crasher", "3", "0.4", "2"),
        ("crasher", "3", "0.8", "3"),
        ("crasher", "3", "0.8", "4"),  # capped
    ]
    assert "steady exited" not in sup.output(), "a healthy sibling is left alone"
    assert sup.state()["children"]["steady"]["state"] == "running"


def test_repeated_crashes_are_reported_loudly_and_recorded_for_the_dashboard(supervise):
    sup = supervise(f"worker={CRASH}", backoff_base=0.1, alert_restarts=3, alert_window=600)
    sup.wait_for(lambda out: "(restart 3 today)" in out, "three restarts")
    sup.wait_for(lambda out: "!!! worker restarted 3 times in 10 minutes" in out, "the alarm")
    assert "(restart 2 today)\n" in sup.output().split("!!!")[0], "no alarm before the third"
    alert = sup.state()["alerts"][0]
    assert alert["child"] == "worker" and alert["restarts"] == 3
    assert alert["log"].endswith("worker.log")


def test_the_backoff_starts_again_once_a_child_stayed_up_long_enough(supervise):
    lived = f"{sys.executable} -c 'import sys, time; time.sleep(0.6); sys.exit(1)'"
    sup = supervise(f"flaky={lived}", backoff_base=0.2, stable_after=0.5)
    sup.wait_for(lambda out: "(restart 3 today)" in out, "three restarts")
    delays = [delay for _, _, delay, _ in RESTART.findall(sup.output())]
    assert delays[:3] == ["0.2", "0.2", "0.2"]


def test_sigterm_stops_every_child_and_nothing_is_restarted(supervise):
    sup = supervise(f"crasher={CRASH}", f"steady={STEADY}", backoff_base=0.2)
    sup.wait_for(lambda out: "(restart 1 today)" in out, "a restart")
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", sup.output())]
    steady_pid = sup.state()["children"]["steady"]["pid"]
    assert steady_pid in pids and _alive(steady_pid)
    assert sup.stop() == 0
    out = sup.output()
    assert out.rstrip().endswith("All processes stopped."), out
    assert not _alive(steady_pid)
    state = sup.state()
    assert state["stopped"] is True
    assert {c["state"] for c in state["children"].values()} == {"stopped"}
    crasher_pid = state["children"]["crasher"]["pid"]
    assert crasher_pid is None or not _alive(crasher_pid)
