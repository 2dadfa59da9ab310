"""The emulator process: N terminals, their listening sockets and the control interface.

Port layout with a fixed ``--base-port B``: terminal ``i`` (from 0) listens on ``B + 3*i`` for
channel 0 and, in the ``terminal`` channel-1 arrangement, on ``B + 3*i + 2`` for channel 1, so
the first terminal has the OPI-NL defaults 4100/4102 when B is 4100. ``--base-port 0`` lets the
kernel pick every port; the ready line says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from terminals.opi.profile import Operation, TerminalProfile

from . import wire
from .cards import CARDS, DEFAULT_TOKEN_KEY
from .channel1 import Channel1
from .control import ControlApi
from .dialects import DIALECTS, MINIMAL_UNSUPPORTED, Dialect, DialectError
from .ledger import Ledger
from .terminal import EmulatedTerminal, EmulatorConfig

log = logging.getLogger("terminals.emulator")

TERMINAL_ID_LENGTH = 8  # CCV terminal ids are eight digits


@dataclass(slots=True)
class FleetOptions:
    count: int = 1
    host: str = "127.0.0.1"
    base_port: int = 0
    control_port: int = 0
    channel1: str = "terminal"
    pos_host: str | None = None
    pos_port: int | None = None
    seed: int | None = None
    terminal_prefix: str = "5200"
    journal: str | None = None


def terminal_ids(prefix: str, count: int) -> list[str]:
    width = TERMINAL_ID_LENGTH - len(prefix)
    if not prefix.isdigit() or width < 1:
        raise ValueError(f"terminal prefix must be 1-{TERMINAL_ID_LENGTH - 1} digits")
    if count > 10**width - 1:
        raise ValueError(f"prefix {prefix!r} leaves room for {10**width - 1} terminals only")
    return [f"{prefix}{index:0{width}d}" for index in range(1, count + 1)]


class EmulatorFleet:
    def __init__(self, options: FleetOptions, config: EmulatorConfig) -> None:
        self.options = options
        self.config = config
        self.ledger = Ledger(options.journal)
        self.rng = random.Random(options.seed)
        self.terminals: dict[str, EmulatedTerminal] = {}
        self.control_port = 0
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        options = self.options
        for index, terminal_id in enumerate(terminal_ids(options.terminal_prefix, options.count)):
            channel1 = Channel1(
                options.channel1,
                wire.parse_device_response,
                pos_host=options.pos_host,
                pos_port=options.pos_port,
                connect_grace=min(1.0, self.config.device_timeout),
            )
            # Each terminal gets its own generator so one terminal's traffic does not change
            # another's approval codes: a seeded run stays reproducible per terminal.
            rng = random.Random(self.rng.random())
            terminal = EmulatedTerminal(
                terminal_id, self.config, self.ledger, channel1, rng, host=options.host
            )
            terminal.resume()
            port0 = options.base_port + 3 * index if options.base_port else 0
            server0 = await asyncio.start_server(
                terminal.serve_channel0, options.host, port0, reuse_address=True
            )
            self._servers.append(server0)
            terminal.port0 = server0.sockets[0].getsockname()[1]
            if options.channel1 == "terminal":
                port1 = port0 + 2 if options.base_port else 0
                server1 = await asyncio.start_server(
                    channel1.accept, options.host, port1, reuse_address=True
                )
                self._servers.append(server1)
                terminal.port1 = server1.sockets[0].getsockname()[1]
            self.terminals[terminal_id] = terminal
        control = ControlApi(self)
        server = await asyncio.start_server(
            control.handle, options.host, options.control_port, reuse_address=True
        )
        self._servers.append(server)
        self.control_port = server.sockets[0].getsockname()[1]

    def ready_line(self) -> str:
        return json.dumps(
            {
                "ready": True,
                "control_port": self.control_port,
                "channel1": self.options.channel1,
                "terminals": [terminal.describe() for terminal in self.terminals.values()],
            }
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for terminal in self.terminals.values():
            terminal.channel1.close()


def raise_fd_limit() -> None:
    """Two listening sockets per terminal plus their connections: 500 terminals need >1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1, help="number of terminals")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--base-port", type=int, default=4100, help="first channel-0 port; 0 picks free ports"
    )
    parser.add_argument("--control-port", type=int, default=0, help="HTTP control port; 0: free")
    parser.add_argument(
        "--channel1",
        choices=("terminal", "pos"),
        default="terminal",
        help="who listens on channel 1: the terminal (POS connects) or the POS",
    )
    parser.add_argument("--pos-host", default=None, help="POS channel-1 listener (arrangement pos)")
    parser.add_argument("--pos-port", type=int, default=None)
    parser.add_argument(
        "--card-wait", type=float, default=30.0, help="seconds to wait for a card before TimedOut"
    )
    parser.add_argument(
        "--auto-tap", action="store_true", help="present a random card after a short delay"
    )
    parser.add_argument(
        "--auto-tap-card",
        default=None,
        metavar="NAME",
        help="with --auto-tap: always this card (a name from terminals/emulator/cards.py)",
    )
    parser.add_argument(
        "--auto-tap-delay",
        default="0.2,1.5",
        metavar="MIN,MAX",
        help="with --auto-tap: seconds from the card prompt to the tap, uniform in MIN..MAX",
    )
    parser.add_argument(
        "--latency",
        default="",
        metavar="OP=SECONDS,...",
        help="time the terminal spends on an operation beyond the card read, e.g. "
        "authorise=2,capture=1 (operations: authorise, capture, release)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    parser.add_argument(
        "--terminal-prefix", default="5200", help="leading digits of the 8-digit terminal ids"
    )
    parser.add_argument(
        "--token-key", default=DEFAULT_TOKEN_KEY, help="HMAC key the card tokens are derived with"
    )
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=30.0,
        help="seconds the POS has to confirm a DeliveryBox request",
    )
    parser.add_argument(
        "--device-timeout",
        type=float,
        default=5.0,
        help="seconds the POS has to answer other channel-1 requests (receipts, displays)",
    )
    parser.add_argument(
        "--no-delivery-box",
        action="store_true",
        help="approve without asking the POS to confirm delivery",
    )
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="ccv",
        help="how the terminals answer: ccv (CCV-like, the default) or minimal (a sparse "
        "third-party firmware; see terminals/emulator/README.md)",
    )
    parser.add_argument(
        "--unsupported",
        default=None,
        metavar="TYPES",
        help="comma-separated RequestType names answered with ServiceResponse Failure "
        f"(default: none for ccv, {','.join(MINIMAL_UNSUPPORTED)} for minimal; '' for none)",
    )
    parser.add_argument(
        "--journal",
        default=None,
        metavar="FILE",
        help="append the ledger to FILE and restore it from there on start (survives restarts)",
    )
    parser.add_argument("--log-level", default="INFO", help="stderr log level")
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when stdin reaches end of file (the parent process went away)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m terminals.emulator", description="CCV IM30 (OPI-NL) terminal emulator"
    )
    add_arguments(parser)
    return parser


def options_from(args: argparse.Namespace) -> tuple[FleetOptions, EmulatorConfig]:
    if args.count < 1:
        raise ValueError("--count must be at least 1")
    if args.channel1 == "pos" and (not args.pos_host or not args.pos_port):
        raise ValueError("--channel1 pos needs --pos-host and --pos-port")
    for name in ("card_wait", "delivery_timeout", "device_timeout"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    terminal_ids(args.terminal_prefix, args.count)  # validates the prefix early
    auto_tap_card = getattr(args, "auto_tap_card", None)
    if auto_tap_card is not None and auto_tap_card not in CARDS:
        raise ValueError(f"--auto-tap-card: no card named {auto_tap_card!r}")
    auto_tap_delay = _delay_range(getattr(args, "auto_tap_delay", None) or "0.2,1.5")
    latency = _latencies(getattr(args, "latency", None) or "")
    try:
        # getattr: a caller building its own Namespace (older management command) has neither.
        dialect = Dialect.make(
            getattr(args, "dialect", None) or "ccv", getattr(args, "unsupported", None)
        )
    except DialectError as exc:
        raise ValueError(f"--dialect/--unsupported: {exc}") from None
    options = FleetOptions(
        count=args.count,
        host=args.host,
        base_port=args.base_port,
        control_port=args.control_port,
        channel1=args.channel1,
        pos_host=args.pos_host,
        pos_port=args.pos_port,
        seed=args.seed,
        terminal_prefix=args.terminal_prefix,
        journal=getattr(args, "journal", None),
    )
    config = EmulatorConfig(
        card_wait=args.card_wait,
        delivery_timeout=args.delivery_timeout,
        device_timeout=args.device_timeout,
        auto_tap=args.auto_tap,
        auto_tap_card=auto_tap_card,
        auto_tap_delay=auto_tap_delay,
        latency=latency,
        token_key=args.token_key,
        delivery_box=not args.no_delivery_box,
        dialect=dialect,
        profile=TerminalProfile(host=args.host),
    )
    return options, config


_LATENCY_OPERATIONS = (Operation.AUTHORISE, Operation.CAPTURE, Operation.RELEASE)


def _delay_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--auto-tap-delay: expected MIN,MAX seconds, not {text!r}") from None
    if not 0 <= low <= high <= 600:
        raise ValueError(f"--auto-tap-delay: need 0 <= MIN <= MAX <= 600, not {text!r}")
    return low, high


def _latencies(text: str) -> dict[Operation, float]:
    latency: dict[Operation, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            op, seconds = Operation(name.strip()), float(value)
        except ValueError:
            raise ValueError(f"--latency: expected OP=SECONDS, not {item!r}") from None
        if op not in _LATENCY_OPERATIONS or not 0 <= seconds <= 600:
            raise ValueError(
                f"--latency: {item!r}: operation one of "
                f"{', '.join(_LATENCY_OPERATIONS)}, seconds 0..600"
            )
        latency[op] = seconds
    return latency


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Thread body: block on stdin and stop the emulator when it closes."""
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader holds its lock
    # and makes interpreter shutdown abort.
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    log.info("stdin closed: the parent is gone")
    with contextlib.suppress(RuntimeError):  # the loop may already be closed
        loop.call_soon_threadsafe(stop.set)


async def serve(options: FleetOptions, config: EmulatorConfig, watch_stdin: bool = False) -> None:
    fleet = EmulatorFleet(options, config)
    await fleet.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if watch_stdin:
        threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    print(fleet.ready_line(), flush=True)
    log.info(
        "%d terminal(s) ready, control on %s:%d",
        len(fleet.terminals),
        options.host,
        fleet.control_port,
    )
    await stop.wait()
    log.info("stopping")
    await fleet.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=str(args.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        options, config = options_from(args)
    except ValueError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit()
    try:
        asyncio.run(serve(options, config, watch_stdin=bool(getattr(args, "watch_stdin", False))))
    except OSError as exc:  # typically a port already in use
        print(f"emulator: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
