"""Run the emulator as a child process and drive it, for tests, benchmarks and the demo.

    with EmulatorProcess(count=2, card_wait=2) as emulator:
        terminal = emulator.terminals[0]
        emulator.present_card(terminal["terminal_id"], "visa_ok")
        ...

The child is a real separate process (``sys.executable -m terminals.emulator``) so the code under
test talks to it over real sockets. It is stopped on ``stop()``, on leaving the ``with`` block and,
as a last resort, at interpreter exit, so a failing test never leaves an orphan listening.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

# Strong references: an EmulatorProcess dropped without stop() must still be stopped at exit.
_live: set[EmulatorProcess] = set()


@atexit.register
def _stop_all() -> None:
    for emulator in list(_live):
        emulator.stop()


class EmulatorError(RuntimeError):
    pass


class ControlError(EmulatorError):
    """The control API answered with an error; ``status`` and ``payload`` say which."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(f"HTTP {status}: {payload}")
        self.status = status
        self.payload = payload


class EmulatorProcess:
    def __init__(
        self,
        count: int = 1,
        channel1: str = "terminal",
        pos_host: str | None = None,
        pos_port: int | None = None,
        card_wait: float = 5.0,
        extra_args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        ready_timeout: float = 30.0,
        start: bool = True,
        dialect: str | None = None,
        unsupported: Sequence[str] | None = None,
    ) -> None:
        """``dialect`` ("ccv" or "minimal") and ``unsupported`` (RequestType names) apply to
        every terminal; None leaves the emulator's defaults (``ccv``; the dialect's own set)."""
        self.count = count
        self.channel1 = channel1
        self.pos_host = pos_host
        self.pos_port = pos_port
        self.card_wait = card_wait
        self.extra_args = tuple(extra_args)
        self.dialect = dialect
        self.unsupported = None if unsupported is None else tuple(unsupported)
        self.host = host
        self.ready_timeout = ready_timeout
        self.terminals: list[dict[str, Any]] = []
        self.control_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        if start:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "terminals.emulator",
            "--count",
            str(self.count),
            "--host",
            self.host,
            "--base-port",
            "0",
            "--control-port",
            "0",
            "--channel1",
            self.channel1,
            "--card-wait",
            str(self.card_wait),
            # The child exits when our end of its stdin closes: even a SIGKILLed test run
            # leaves no emulator behind.
            "--watch-stdin",
        ]
        if self.pos_host is not None:
            command += ["--pos-host", self.pos_host]
        if self.pos_port is not None:
            command += ["--pos-port", str(self.pos_port)]
        if self.dialect is not None:
            command += ["--dialect", self.dialect]
        if self.unsupported is not None:
            command += ["--unsupported", ",".join(self.unsupported)]
        return command + list(self.extra_args)

    def start(self) -> None:
        if self.process is not None:
            return
        # stderr goes to a file, not a pipe: a chatty emulator must never block on a full pipe.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
        )
        _live.add(self)
        try:
            ready = self._read_ready_line()
        except BaseException:
            self.stop()
            raise
        self.control_port = ready["control_port"]
        self.terminals = ready["terminals"]

    def _read_ready_line(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.ready_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise EmulatorError(f"no ready line within {self.ready_timeout}s{self._tail()}")
                if not selector.select(min(remaining, 0.5)):
                    if self.process.poll() is not None:
                        break
                    continue
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
        line = buffer.split(b"\n", 1)[0]
        try:
            ready = json.loads(line)
        except ValueError:
            ready = None
        if not isinstance(ready, dict) or not ready.get("ready"):
            self.process.poll()
            raise EmulatorError(
                f"emulator did not start (exit code {self.process.returncode}, "
                f"stdout {line[:200]!r}){self._tail()}"
            )
        return ready

    def stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _tail(self, lines: int = 30) -> str:
        text = self.stderr_text().strip()
        if not text:
            return ""
        return "\n--- emulator stderr ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        _live.discard(self)
        return process.returncode

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def terminal(self, terminal_id: str | None = None) -> dict[str, Any]:
        """The ready-line entry of one terminal (the first one by default)."""
        if terminal_id is None:
            return self.terminals[0]
        for terminal in self.terminals:
            if terminal["terminal_id"] == terminal_id:
                return terminal
        raise KeyError(terminal_id)

    # -- control API ----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (an http URL built from our own port)
            self.control_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                decoded = json.loads(payload)
            except ValueError:
                decoded = payload.decode(errors="replace")
            raise ControlError(exc.code, decoded) from None

    def present_card(self, terminal_id: str, card: str) -> dict[str, Any]:
        return self.request("POST", f"/terminals/{terminal_id}/present", {"card": card})

    def set_fault(
        self,
        terminal_id: str,
        kind: str,
        count: int | None = 1,
        rate: float | None = None,
        delay: float | None = None,
        operation: str | None = None,
        commit: bool | None = None,
    ) -> dict[str, Any]:
        """Add a fault (kinds in terminals/emulator/faults.py).

        Without ``rate`` it fires on the next ``count`` matching requests. With ``rate`` it fires
        with that probability on every matching request until cleared, unless a ``count`` other
        than the default 1 caps it. ``operation`` narrows it to one RequestType or alias
        ("capture"); ``commit`` overrides whether no_answer/garbage/slow commit first.
        """
        body: dict[str, Any] = {"kind": kind}
        if rate is not None:
            body["rate"] = rate
            if count != 1:
                body["count"] = count
        elif count is not None:
            body["count"] = count
        if delay is not None:
            body["delay"] = delay
        if operation is not None:
            body["operation"] = operation
        if commit is not None:
            body["commit"] = commit
        return self.request("POST", f"/terminals/{terminal_id}/faults", body)

    def clear_faults(self, terminal_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/terminals/{terminal_id}/faults")

    def set_offline(self, terminal_id: str, offline: bool) -> dict[str, Any]:
        return self.request("POST", f"/terminals/{terminal_id}/offline", {"offline": offline})

    def set_condition(self, terminal_id: str, condition: str) -> dict[str, Any]:
        return self.request("POST", f"/terminals/{terminal_id}/condition", {"condition": condition})

    def set_dialect(
        self, terminal_id: str, dialect: str, unsupported: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Switch one terminal's dialect at runtime; ``unsupported=None``: the dialect's set."""
        body: dict[str, Any] = {"dialect": dialect}
        if unsupported is not None:
            body["unsupported"] = list(unsupported)
        return self.request("POST", f"/terminals/{terminal_id}/dialect", body)

    def dialect_of(self, terminal_id: str) -> dict[str, Any]:
        return self.request("GET", f"/terminals/{terminal_id}/dialect")

    def ledger(
        self, terminal_id: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(
            {k: v for k, v in (("terminal_id", terminal_id), ("kind", kind)) if v is not None}
        )
        return self.request("GET", "/ledger" + (f"?{query}" if query else ""))

    def state(self, terminal_id: str) -> dict[str, Any]:
        return self.request("GET", f"/terminals/{terminal_id}/state")

    def totals(self, terminal_id: str) -> dict[str, Any]:
        return self.request("GET", f"/terminals/{terminal_id}/totals")

    def channel1_log(self, terminal_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/terminals/{terminal_id}/channel1")

    def inject_capture(
        self, terminal_id: str, amount_minor: int, currency: str = "EUR", card: str = "visa_ok"
    ) -> dict[str, Any]:
        return self.request(
            "POST",
            f"/terminals/{terminal_id}/inject",
            {"amount_minor": amount_minor, "currency": currency, "card": card},
        )

    def cards(self) -> list[dict[str, Any]]:
        return self.request("GET", "/cards")
