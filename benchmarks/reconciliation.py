"""Reconciling one terminal-day of 100,000 captures: seconds, queries, and a same-run baseline.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/reconciliation.py [--captures 100000]

Creates its own database (the test database of DATABASE_URL, ``<name>_bench_reconcile``,
migrated, dropped at the end), writes one terminal with ``--captures`` successful captures
(and the authorisations they settle) in one period across four brands with INSERT ... SELECT
generate_series, then times ``sessions.closings.reconcile``

  (a) with the terminal's totals equal to ours, and
  (b) with one brand's totals one capture short (runs ``_explain`` and its subset-sum bound).

Target: under a second and a number of queries that does not grow with the captures. Because a
shared VM's speed drifts, each figure is also printed as a ratio to a baseline timed in the same
run: one ``SELECT count(*), sum(amount_minor)`` over the terminal's captures of the period, the
least any reconciliation must read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks.benchdb import bench_database, insert_select  # noqa: E402
from evpay.audit import Actor  # noqa: E402
from sessions.closings import reconcile  # noqa: E402
from sessions.models import TerminalTransaction  # noqa: E402
from terminals.models import PeriodClosing, Site, Terminal  # noqa: E402

BRANDS = ("VISA", "ECMC", "MAES", "AMEX")
ACTOR = Actor.job("benchmark")


def _insert_transactions(terminal: Terminal, count: int, operation: str, start, values) -> None:
    """One INSERT ... SELECT generate_series of ``count`` rows; ``values`` overrides columns.

    Every other column gets its field's blank value (benchmarks.benchdb.insert_select).
    """
    fixed = {
        "public_id": "gen_random_uuid()",
        "terminal_id": str(terminal.pk),
        "operation": f"'{operation}'",
        "workstation_id": "'EVPAY1'",
        "currency": "'EUR'",
        "state": "'completed'",
        "outcome": "'success'",
        # Spread over the period, all strictly inside it.
        "created_at": f"'{start.isoformat()}'::timestamptz + g * interval '1 ms'",
        "completed_at": f"'{start.isoformat()}'::timestamptz + g * interval '1 ms'",
        "deadline_at": f"'{start.isoformat()}'::timestamptz + interval '1 day'",
    } | values
    insert_select(TerminalTransaction, "generate_series(1, %s) AS g", fixed, [count])


def make_day(count: int) -> tuple[Terminal, object, object]:
    site = Site.objects.create(name="Benchmark", time_zone="Europe/Amsterdam", currency="EUR")
    terminal = Terminal.objects.create(
        site=site, terminal_id="B0000001", name="IM30 bench", host="127.0.0.1"
    )
    end = timezone.now()
    start = end - timedelta(days=1)
    brand = "(ARRAY[" + ", ".join(f"'{b}'" for b in BRANDS) + f"])[1 + g %% {len(BRANDS)}]"
    # Captures need the authorisation they settle (tx_settlement_has_authorisation) and only
    # one live capture per authorisation; the authorisation's session may be NULL.
    _insert_transactions(
        terminal,
        count,
        "authorise",
        start,
        {"request_id": "'A' || g", "amount_minor": "5000", "card_brand": brand},
    )
    first_auth = TerminalTransaction.objects.filter(terminal=terminal).order_by("id").first().pk
    _insert_transactions(
        terminal,
        count,
        "capture",
        start,
        {
            "request_id": "'C' || g",
            # 1.00 to 49.99, varied so the subset-sum bound has distinct amounts to work on.
            "amount_minor": "100 + (g * 7919) %% 4900",
            "limit_minor": "5000",
            "original_id": f"{first_auth - 1} + g",
            "card_brand": brand,
        },
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TerminalTransaction._meta.db_table}")
    return terminal, start, end


def our_totals(terminal: Terminal, start, end) -> list[SimpleNamespace]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT card_brand, count(*), sum(amount_minor) FROM "  # noqa: S608 (constants)
            f"{TerminalTransaction._meta.db_table} WHERE terminal_id = %s "
            "AND operation = 'capture' AND outcome = 'success' AND created_at > %s "
            "AND created_at <= %s GROUP BY card_brand ORDER BY card_brand",
            [terminal.pk, start, end],
        )
        rows = cursor.fetchall()
    return [
        SimpleNamespace(
            card_circuit=brand,
            number_payments=n,
            amount=SimpleNamespace(currency="EUR", minor=int(amount)),
        )
        for brand, n, amount in rows
    ]


def baseline(terminal: Terminal, start, end) -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), sum(amount_minor) FROM "  # noqa: S608 (our own constants)
            f"{TerminalTransaction._meta.db_table} WHERE terminal_id = %s "
            "AND operation = 'capture' AND outcome = 'success' AND created_at > %s "
            "AND created_at <= %s",
            [terminal.pk, start, end],
        )
        cursor.fetchall()
    return time.perf_counter() - started


def timed_reconcile(terminal, start, end, totals) -> tuple[float, int, str]:
    closing = PeriodClosing.objects.create(
        terminal=terminal, business_date=end.date(), period_start=start, period_end=end
    )
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        reconcile(closing, totals, ACTOR)
        seconds = time.perf_counter() - started
    return seconds, len(queries), closing.state


def run(count: int, repeats: int) -> None:
    started = time.perf_counter()
    terminal, start, end = make_day(count)
    print(f"wrote {count:,} captures (+ authorisations) in {time.perf_counter() - started:.1f} s")
    totals = our_totals(terminal, start, end)
    short = [
        SimpleNamespace(
            card_circuit=t.card_circuit,
            number_payments=t.number_payments - (1 if i == 0 else 0),
            amount=SimpleNamespace(currency="EUR", minor=t.amount.minor - (1234 if i == 0 else 0)),
        )
        for i, t in enumerate(totals)
    ]
    baseline(terminal, start, end)  # warm the cache the same way for both
    for label, case in (("(a) totals match", totals), ("(b) one brand short", short)):
        best = None
        for _ in range(repeats):
            base = baseline(terminal, start, end)
            seconds, n_queries, state = timed_reconcile(terminal, start, end, case)
            if best is None or seconds < best[0]:
                best = (seconds, n_queries, state, base)
        seconds, n_queries, state, base = best
        print(
            f"{label}: {seconds:.3f} s, {n_queries} queries, closing {state}; baseline "
            f"count+sum {base * 1000:.1f} ms; reconcile = {seconds / base:.1f}x baseline"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N per case")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("needs PostgreSQL: set DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    with bench_database(f"{connection.settings_dict['NAME']}_bench_reconcile"):
        run(args.captures, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
