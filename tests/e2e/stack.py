"""Start and stop `manage.py runstack` as the end-to-end tests need it: a process group of its
own (so a stop reaches every child), its output in a file, and free ports for the emulator."""

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT


def _ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def emulator_base(terminals: int) -> int:
    """A base port with the 3 ports per terminal the emulator fleet listens on all free."""
    for _ in range(50):
        base = random.randint(20000, 30000)
        if _ports_free(base, 3 * terminals):
            return base
    raise RuntimeError("no free port range for the emulator")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_stack(env: dict, out_path: Path):
    """runstack with `env`, writing to `out_path`; returns (process, open output file)."""
    out = open(out_path, "wb")  # noqa: SIM115 - closed by stop_stack
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return stack, out


def stop_stack(stack: subprocess.Popen, out) -> None:
    """SIGTERM to the whole group, as Ctrl-C would; SIGKILL (and fail) if it does not stop."""
    if stack.poll() is None:
        os.killpg(stack.pid, signal.SIGTERM)
    try:
        stack.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.pid, signal.SIGKILL)
        raise
    finally:
        out.close()
