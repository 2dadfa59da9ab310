"""Encode + decode throughput of a typical O.P.I. authorisation response, on one core.

    .venv/bin/python benchmarks/opi_codec.py [--seconds 3]

One round = ``encode(response)`` to framed-ready bytes plus ``parse(bytes)`` back to a
dataclass, which is what one side of a channel-0 exchange costs. Target: >= 20,000 rounds/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


def round_trip() -> None:
    parsed = m.parse(m.encode(TYPICAL_AUTHORISATION))
    if parsed.request_id != "123456789":
        raise AssertionError("round trip changed the message")


def measure(seconds: float) -> tuple[float, float]:
    """Rounds per wall-clock second and per CPU second.

    The CPU-time figure is the one-core throughput even when other processes share the
    machine (the wall-clock one then drops with the load).
    """
    for _ in range(500):  # warm caches and the regex engine
        round_trip()
    rounds = 0
    wall_started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = wall_started + seconds
    while True:
        for _ in range(1000):
            round_trip()
        rounds += 1000
        now = time.perf_counter()
        if now >= deadline:
            cpu = time.process_time() - cpu_started
            return rounds / (now - wall_started), rounds / cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    assert m.parse(m.encode(TYPICAL_AUTHORISATION)) == TYPICAL_AUTHORISATION
    wall_rate, cpu_rate = measure(args.seconds)
    size = len(m.encode(TYPICAL_AUTHORISATION))
    print(
        f"authorisation response ({size} bytes): {cpu_rate:,.0f} encode+decode per CPU second "
        f"({wall_rate:,.0f} per wall-clock second, {1e6 / cpu_rate:.1f} us each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
