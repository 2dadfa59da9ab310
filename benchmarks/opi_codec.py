"""Encode + decode throughput of a typical O.P.I. authorisation response, on one core.

    .venv/bin/python benchmarks/opi_codec.py [--seconds 3]

One round = ``encode(response)`` to bytes plus ``parse(bytes)`` back to a dataclass, which is
what one side of a channel-0 exchange costs. Target: >= 20,000 rounds per second.

Rates are per CPU second of this process. Because a shared VM's speed can drift by half from
one minute to the next, a bare C ``ElementTree.fromstring`` of the same bytes is timed in
interleaved slices as a reference: the ratio between the two is the stable figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import fromstring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminals.opi import messages as m  # noqa: E402

TYPICAL_AUTHORISATION = m.CardServiceResponse(
    request_type="CardPreAuthorisation",
    request_id="123456789",
    overall_result="Success",
    workstation_id="POS1",
    pop_id="001",
    terminal=m.TerminalInfo(terminal_id="52000001", stan="000123"),
    tender=m.Tender(
        amount=m.Amount(5000, "EUR"),
        authorisation=m.Authorisation(
            approval_code="A1B2C3",
            card_circuit="VISA",
            card_pan="476173******0119",
            timestamp="2026-11-25T18:00:00+01:00",
            action_code="000",
            return_code="0",
        ),
    ),
    card_value=m.CardValue(
        tokens=[
            m.Token(m.TOKEN_TYPE_CARD_TOKEN, "99ABCDEF0123456789"),
            m.Token(m.TOKEN_TYPE_PAR, "V0010013018209487512345678901"),
        ]
    ),
)
_DOCUMENT = m.encode(TYPICAL_AUTHORISATION)


def round_trip() -> None:
    parsed = m.parse(m.encode(TYPICAL_AUTHORISATION))
    if parsed.request_id != "123456789":
        raise AssertionError("round trip changed the message")


def bare_parse() -> None:
    fromstring(_DOCUMENT)  # noqa: S314 (our own document, reference timing only)


def _slice(function: Callable[[], None], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        function()
    return time.process_time() - started


def measure(seconds: float) -> tuple[float, float]:
    """(round trips per CPU second, bare parses per CPU second), timed in alternation."""
    _slice(round_trip, 1000)  # warm caches
    _slice(bare_parse, 1000)
    trip_cpu = parse_cpu = 0.0
    slices = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        trip_cpu += _slice(round_trip, 1000)
        parse_cpu += _slice(bare_parse, 1000)
        slices += 1
    return slices * 1000 / trip_cpu, slices * 1000 / parse_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    assert m.parse(_DOCUMENT) == TYPICAL_AUTHORISATION
    trip_rate, parse_rate = measure(args.seconds)
    print(
        f"authorisation response ({len(_DOCUMENT)} bytes): {trip_rate:,.0f} encode+decode per "
        f"second on one core ({1e6 / trip_rate:.1f} us each)"
    )
    print(
        f"reference, bare ElementTree.fromstring of the same bytes: {parse_rate:,.0f}/s "
        f"({1e6 / parse_rate:.1f} us); one round trip costs {parse_rate / trip_rate:.2f} of those"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
