"""Child processes for runstack and soak: own process group each, logs to files, stopped
gracefully then killed, and nothing left behind; and the Supervisor that keeps runstack's
children up (restart with backoff, loud when one keeps crashing).

    python -m evpay.testbed.supervisor --log-dir DIR NAME=COMMAND ...   # any commands, for tests
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from django.conf import settings

from evpay import supervision

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


class _Slot:
    """One supervised program: its current Child, when it may start again, its restarts."""

    def __init__(self, name: str, argv: list[str], backoff_base: float):
        self.name, self.argv = name, argv
        self.child: Child | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.next_delay = backoff_base
        self.restarts: list[float] = []  # wall-clock times, for "today" and the alert window
        self.last_exit: dict | None = None


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Starts every program, restarts one that exits with exponential backoff (``backoff_base``
    doubling up to ``backoff_max``; back to the base once a child stayed up ``stable_after``
    seconds), and stops them all only on SIGINT/SIGTERM (or ``request_stop()``).

    ``alert_restarts`` restarts of one program within ``alert_window`` seconds are reported
    loudly through ``warn`` and recorded in the state file, where the dashboard shows a banner.
    """

    def __init__(
        self,
        programs: dict[str, list[str]],
        log_dir: Path,
        *,
        state_file: Path | None = None,
        env: dict | None = None,
        cwd: Path | None = None,
        say: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 300.0,
        alert_restarts: int = 3,
        alert_window: float = 600.0,
        settle: dict[str, float] | None = None,
        tick: float = 0.5,
        handle_signals: bool = True,
    ):
        self.log_dir, self.state_file = Path(log_dir), state_file
        self.env, self.cwd = env, cwd
        self.say, self.warn = say, warn or say
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.stable_after = stable_after
        self.alert_restarts, self.alert_window = alert_restarts, alert_window
        self.settle = settle or {}  # seconds to wait after starting a program (listening)
        self.tick, self.handle_signals = tick, handle_signals
        self.slots = {name: _Slot(name, argv, backoff_base) for name, argv in programs.items()}
        self.alerts: list[dict] = []
        self.stopping = False
        self._killed: list[str] | None = None
        self._state_written = 0.0

    # --- life cycle -----------------------------------------------------------------------
    @property
    def children(self) -> dict[str, Child]:
        return {name: slot.child for name, slot in self.slots.items() if slot.child is not None}

    def request_stop(self, *_args) -> None:
        self.stopping = True

    def start(self) -> None:
        if self.handle_signals:
            # Before the first child: a SIGTERM while they start must still stop them all.
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGTERM, self.request_stop)
        for slot in self.slots.values():
            if self.stopping:
                break
            self._spawn(slot)
            if self.settle.get(slot.name):
                time.sleep(self.settle[slot.name])
        self._write_state()

    def run(self, on_tick: Callable[[Supervisor], None] | None = None) -> None:
        """Supervise until SIGINT/SIGTERM (handlers installed by start()), then stop all."""
        try:
            while not self.stopping:
                self.check()
                if on_tick is not None:
                    on_tick(self)
                time.sleep(self.tick)
        finally:
            self.stop()

    def stop(self) -> list[str]:
        """Stops every child (once; later calls return the same answer): who needed SIGKILL."""
        self.stopping = True
        if self._killed is None:
            # Not those waiting for a restart: already reaped, their pid may be someone else's.
            running = [s.child for s in self.slots.values() if s.child and s.restart_at is None]
            self._killed = stop_all(running)
            for slot in self.slots.values():
                slot.restart_at = None
            self._write_state(stopped=True)
        return self._killed

    # --- one pass -------------------------------------------------------------------------
    def check(self) -> None:
        now = time.monotonic()
        changed = False
        for slot in self.slots.values():
            if slot.child is not None and slot.restart_at is None and not slot.child.alive():
                self._exited(slot, now)
                changed = True
            elif slot.restart_at is not None and now >= slot.restart_at and not self.stopping:
                try:
                    self._spawn(slot)
                except OSError as exc:  # e.g. out of processes or file handles: try again later
                    delay = slot.next_delay
                    slot.next_delay = min(self.backoff_max, delay * 2)
                    slot.restart_at = now + delay
                    self.warn(f"{slot.name} could not be started ({exc}); retrying in {delay:g} s")
                changed = True
        # A heartbeat now and then, so a reader can tell a live supervisor from a stale file.
        if changed or now - self._state_written > 10:
            self._write_state()

    def _spawn(self, slot: _Slot) -> None:
        slot.child = Child(slot.name, slot.argv, self.log_dir, self.env, self.cwd)
        slot.started_at, slot.restart_at = time.monotonic(), None

    def _exited(self, slot: _Slot, now: float) -> None:
        child = slot.child
        code = child.popen.returncode
        child.wait_stopped(now)  # reaps what is left of its group, closes its log
        if now - slot.started_at >= self.stable_after:
            slot.next_delay = self.backoff_base
        delay = slot.next_delay
        slot.next_delay = min(self.backoff_max, delay * 2)
        slot.restart_at = now + delay
        wall = time.time()
        slot.restarts = [t for t in slot.restarts if wall - t < 86400] + [wall]
        slot.last_exit = {"code": code, "at": _iso(wall)}
        self.say(
            f"{slot.name} {_describe_exit(code)}; restarting in {delay:g} s "
            f"(restart {self._restarts_today(slot, wall)} today)"
        )
        recent = [t for t in slot.restarts if wall - t <= self.alert_window]
        if len(recent) >= self.alert_restarts:
            minutes = self.alert_window / 60
            alert = {
                "child": slot.name,
                "restarts": len(recent),
                "window_minutes": minutes,
                "at": _iso(wall),
                "log": str(child.log_path),
            }
            self.alerts = (self.alerts + [alert])[-20:]
            self.warn(
                f"!!! {slot.name} restarted {len(recent)} times in {minutes:g} minutes: it keeps "
                f"crashing; see {child.log_path}"
            )

    @staticmethod
    def _restarts_today(slot: _Slot, wall: float) -> int:
        today = datetime.fromtimestamp(wall).date()
        return sum(1 for t in slot.restarts if datetime.fromtimestamp(t).date() == today)

    def _write_state(self, stopped: bool = False) -> None:
        if self.state_file is None:
            return
        wall = time.time()
        children = {}
        for name, slot in self.slots.items():
            alive = slot.child is not None and slot.child.alive()
            children[name] = {
                "pid": slot.child.pid if slot.child is not None else None,
                "state": "stopped" if stopped else ("running" if alive else "restarting"),
                "restarts_today": self._restarts_today(slot, wall),
                "last_exit": slot.last_exit,
            }
        state = {
            "pid": os.getpid(),
            "updated_at": _iso(wall),
            "stopped": stopped,
            "children": children,
            "alerts": self.alerts,
        }
        try:
            supervision.write_state(state, self.state_file)
        except OSError as exc:  # a full disk must not take the supervisor down with it
            self.warn(f"could not write {self.state_file}: {exc}")
        self._state_written = time.monotonic()


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall).astimezone().isoformat()


def main(argv: list[str] | None = None) -> int:
    """Supervise arbitrary commands (what the tests use to crash a child on purpose)."""
    parser = argparse.ArgumentParser(description="Run and restart commands until SIGTERM.")
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--backoff-base", type=float, default=1.0)
    parser.add_argument("--backoff-max", type=float, default=60.0)
    parser.add_argument("--stable-after", type=float, default=300.0)
    parser.add_argument("--alert-restarts", type=int, default=3)
    parser.add_argument("--alert-window", type=float, default=600.0)
    parser.add_argument("programs", nargs="+", metavar="NAME=COMMAND")
    args = parser.parse_args(argv)
    programs = {}
    for spec in args.programs:
        name, _, command = spec.partition("=")
        programs[name] = shlex.split(command)

    def say(line: str) -> None:
        print(f"{datetime.now().isoformat(timespec='seconds')} {line}", flush=True)

    supervisor = Supervisor(
        programs,
        args.log_dir,
        state_file=args.state_file,
        say=say,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        stable_after=args.stable_after,
        alert_restarts=args.alert_restarts,
        alert_window=args.alert_window,
        tick=0.1,
    )
    supervisor.start()
    say("started: " + ", ".join(f"{n} (pid {c.pid})" for n, c in supervisor.children.items()))
    supervisor.run()
    say("All processes stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
