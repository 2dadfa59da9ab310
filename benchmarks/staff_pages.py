"""Staff pages over 1,000,000 charging sessions, against the Django admin changelist.

    DEBUG=1 DATABASE_URL=postgresql://... .venv/bin/python benchmarks/staff_pages.py \
        [--sessions 1000000] [--reuse] [--repeats 3]

Creates its own database (the test database of DATABASE_URL, ``<name>_bench_staff``, migrated)
and fills it with INSERT ... SELECT generate_series: 2 sites, 50 terminals with 2 connectors
each, ``--sessions`` charging sessions over 90 days (mostly closed and captured; declined,
released, timed out, aborted, failed; a few still charging), one authorisation and one capture
TerminalTransaction per captured session, and a daily closing per terminal with four brand
totals; then ANALYZE. ``--reuse`` keeps the database afterwards and, when it already holds the
same number of sessions, uses it as it is (writing 1 M sessions takes minutes); without it the
database is dropped at the end.

Then an operator (in the role's group, as staff are: a superuser's permission checks read
nothing) signed in with Django's test Client loads each staff page, and a superuser the admin
changelist of sessions (best of ``--repeats``), printing seconds, queries and the ratio to the
admin changelist's first page timed in the same run (a shared VM's speed drifts; the ratio
does not). The fragments a page asks for as soon as it is shown (the terminal page's recent
transactions) are timed as htmx asks for them, and added up with the page ("as loaded").
Target (issue #19 P3): each staff page <= 0.2 x that, <= 10 queries, no sequential
scan over sessions. Last, EXPLAIN (ANALYZE, BUFFERS) of the slowest staff page's slowest query,
and the one-day CSV's peak Python memory (tracemalloc) beside its row count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks.benchdb import bench_database, insert_select  # noqa: E402
from evpay.roles import OPERATOR  # noqa: E402
from evpay.templatetags.evpay_tags import site_localtime  # noqa: E402
from sessions.models import ChargingSession, TerminalTransaction  # noqa: E402
from sessions.views import DEFAULT_SORT, session_order  # noqa: E402
from terminals.models import (  # noqa: E402
    ClosingBrandTotal,
    Connector,
    PeriodClosing,
    Site,
    Terminal,
)

TERMINALS, CONNECTORS_PER_TERMINAL, DAYS = 50, 2, 90
# A session's pseudo-random draw 0..999, from its number: deterministic, no random() per row.
DRAW = "(g::bigint * 2654435761 % 1000)::int"


def _array(values) -> str:
    return "ARRAY[" + ", ".join(str(v) for v in values) + "]"


def _case(draw: str, shares: list[tuple[int, str]]) -> str:
    """CASE over a 0..999 draw: shares are (per mille, SQL value), in order."""
    parts, upto = [], 0
    for share, value in shares[:-1]:
        upto += share
        parts.append(f"WHEN {draw} < {upto} THEN {value}")
    return f"(CASE {' '.join(parts)} ELSE {shares[-1][1]} END)"


def populate(count: int) -> None:
    end = timezone.now().replace(microsecond=0)
    start = end - timedelta(days=DAYS)
    sites = [
        Site.objects.create(name="Bench Amsterdam", time_zone="Europe/Amsterdam"),
        Site.objects.create(name="Bench London", time_zone="Europe/London", currency="EUR"),
    ]
    terminals = [
        Terminal.objects.create(
            site=sites[i % 2], terminal_id=f"B{i:07d}", name=f"IM30 {i:02d}", host="127.0.0.1"
        )
        for i in range(TERMINALS)
    ]
    connectors = [
        Connector.objects.create(terminal=t, evse_id=f"NL*EVP*E{t.pk}*{c}", label=f"{c}, 22 kW")
        for t in terminals
        for c in range(1, CONNECTORS_PER_TERMINAL + 1)
    ]
    n_conn = len(connectors)
    conn_ids = _array(c.pk for c in connectors)
    term_ids = _array(c.terminal_id for c in connectors)
    site_ids = _array(c.terminal.site_id for c in connectors)
    # Sessions in time order (g = 1 oldest); the newest few, one per connector, still open.
    open_from = count - min(60, n_conn) + 1
    closed = f"g < {open_from}"
    reason = _case(
        "s.d",
        [(850, "'captured'"), (50, "'declined'"), (40, "'released'"), (30, "'timed_out'"),
         (20, "'aborted'"), (10, "'failed'")],
    )  # fmt: skip
    brand = _case(
        "(s.d * 7 % 1000)", [(450, "'VISA'"), (350, "'ECMC'"), (150, "'MAES'"), (50, "'AMEX'")]
    )
    bin6 = _case(
        "(s.d * 7 % 1000)",
        [(450, "'411111'"), (350, "'541333'"), (150, "'676703'"), (50, "'371449'")],
    )
    step_ms = DAYS * 86_400_000 // count
    source = (
        f"(SELECT g, {DRAW} AS d, lpad(((g * 7919 + 13) % 10000)::text, 4, '0') AS last4, "  # noqa: S608
        f"'{start.isoformat()}'::timestamptz + (g::bigint * {step_ms} + (g * 7) % {step_ms}) "
        f"* interval '1 ms' AS at, (100 + (g * 7919) % 4900)::int AS cost, "
        f"({conn_ids})[(1 + g % {n_conn})::int] AS connector, ({term_ids})[(1 + g % {n_conn})::int] AS term, "
        f"({site_ids})[(1 + g % {n_conn})::int] AS site "
        f"FROM generate_series(1::bigint, {count}) AS g) s"
    )
    # The reason drawn for every session; an open one is charging and has no reason yet.
    r = f"(CASE WHEN {closed.replace('g', 's.g')} THEN {reason} ELSE '' END)"
    has_card = f"{r} NOT IN ('timed_out', 'aborted')"
    authorised = f"{r} IN ('captured', 'released', '', 'failed')"
    captured = f"{r} = 'captured'"
    insert_select(
        ChargingSession,
        source,
        {
            "public_id": "gen_random_uuid()",
            "connector_id": "s.connector",
            "terminal_id": "s.term",
            "site_id": "s.site",
            "state": f"(CASE WHEN {r} = '' THEN 'charging' ELSE 'closed' END)",
            "close_reason": r,
            "started_by": "'bench-key'",
            "requested_at": "s.at",
            "authorised_at": f"(CASE WHEN {authorised} THEN s.at + interval '20 s' END)",
            "charging_started_at": f"(CASE WHEN {authorised} THEN s.at + interval '60 s' END)",
            "charging_ended_at": f"(CASE WHEN {captured} THEN s.at + (30 + s.d % 120) * "
            "interval '1 min' END)",
            "closed_at": f"(CASE WHEN {r} <> '' THEN s.at + (35 + s.d % 120) * "
            "interval '1 min' END)",
            "energy_wh": f"(CASE WHEN {captured} OR {r} = '' THEN s.cost * 30 ELSE 0 END)",
            "currency": "'EUR'",
            "authorised_amount_minor": f"(CASE WHEN {authorised} THEN 5000 ELSE 0 END)",
            "cost_total_minor": f"(CASE WHEN {captured} OR {r} = '' THEN s.cost ELSE 0 END)",
            "cost_energy_minor": f"(CASE WHEN {captured} OR {r} = '' THEN s.cost ELSE 0 END)",
            "cost_vat_minor": f"(CASE WHEN {captured} THEN s.cost * 21 / 121 ELSE 0 END)",
            "captured_amount_minor": f"(CASE WHEN {captured} THEN s.cost ELSE 0 END)",
            "card_brand": f"(CASE WHEN {has_card} THEN {brand} ELSE '' END)",
            "masked_pan": f"(CASE WHEN {has_card} THEN {bin6} || '******' || s.last4 ELSE '' END)",
            "pan_last4": f"(CASE WHEN {has_card} THEN s.last4 ELSE '' END)",
            # Returning drivers: about 200,000 distinct cards.
            "card_token": f"(CASE WHEN {has_card} THEN 'tok' || (s.g % 200000) ELSE '' END)",
        },
    )
    tx = TerminalTransaction._meta.db_table
    sessions = ChargingSession._meta.db_table
    common = {
        "public_id": "gen_random_uuid()",
        "terminal_id": "s.terminal_id",
        "workstation_id": "'EVPAY1'",
        "currency": "'EUR'",
        "state": "'completed'",
        "outcome": "'success'",
        "card_brand": "s.card_brand",
        "masked_pan": "s.masked_pan",
        "card_token": "s.card_token",
    }
    insert_select(
        TerminalTransaction,
        f"{sessions} s WHERE s.close_reason = 'captured'",
        common
        | {
            "session_id": "s.id",
            "operation": "'authorise'",
            "request_id": "'A' || s.id",
            "amount_minor": "s.authorised_amount_minor",
            "created_at": "s.authorised_at - interval '15 s'",
            "completed_at": "s.authorised_at",
            "deadline_at": "s.authorised_at + interval '1 min'",
            "stan": "lpad((s.id % 1000000)::text, 6, '0')",
            "approval_code": "lpad((s.id * 31 % 1000000)::text, 6, '0')",
        },
    )
    # A capture settles its authorisation (tx_settlement_has_authorisation), one per
    # authorisation (tx_one_live_settlement_per_auth), never above it (tx_amount_le_limit).
    insert_select(
        TerminalTransaction,
        f"{tx} a JOIN {sessions} s ON s.id = a.session_id WHERE a.operation = 'authorise'",
        common
        | {
            "session_id": "s.id",
            "operation": "'capture'",
            "request_id": "'C' || s.id",
            "original_id": "a.id",
            "amount_minor": "s.captured_amount_minor",
            "limit_minor": "a.amount_minor",
            "created_at": "s.closed_at - interval '10 s'",
            "completed_at": "s.closed_at",
            "deadline_at": "s.closed_at + interval '1 min'",
            "stan": "a.stan",
        },
    )
    insert_select(
        PeriodClosing,
        f"unnest({_array(t.pk for t in terminals)}) AS t(id), generate_series(1, {DAYS}) AS d",
        {
            "public_id": "gen_random_uuid()",
            "terminal_id": "t.id",
            "business_date": f"'{end.date().isoformat()}'::date - d",
            "period_start": f"'{end.isoformat()}'::timestamptz - (d + 1) * interval '1 day'",
            "period_end": f"'{end.isoformat()}'::timestamptz - d * interval '1 day'",
            "state": "(CASE WHEN (t.id * 31 + d) % 50 = 0 THEN 'mismatch' ELSE 'matched' END)",
            "triggered_by": "'schedule'",
            "created_at": f"'{end.isoformat()}'::timestamptz - d * interval '1 day'",
        },
    )
    insert_select(
        ClosingBrandTotal,
        f"{PeriodClosing._meta.db_table} c, unnest(ARRAY['VISA', 'ECMC', 'MAES', 'AMEX']) AS b",
        {
            "closing_id": "c.id",
            "brand": "b",
            "currency": "'EUR'",
            "terminal_count": "40",
            "terminal_amount_minor": "100000",
            "our_count": "(CASE WHEN c.state = 'mismatch' AND b = 'VISA' THEN 39 ELSE 40 END)",
            "our_amount_minor": "(CASE WHEN c.state = 'mismatch' AND b = 'VISA' THEN 97500 "
            "ELSE 100000 END)",
        },
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# What htmx sends for a fragment: the "+" cases, which a page loads itself (hx-trigger="load").
HTMX = {"HX-Request": "true"}


def _run(client: Client, url: str, headers=None) -> tuple[float, list[dict], object]:
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        # A streamed CSV counts until its last row is written.
        body = b"".join(response.streaming_content) if response.streaming else response.content
        seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}\n{body[:2000]!r}")
    return seconds, list(queries.captured_queries), body


def best_of(client, url, repeats, headers=None) -> tuple[float, list[dict], object]:
    _run(client, url, headers)  # warm: compiled templates, the database's cache
    return min((_run(client, url, headers) for _ in range(repeats)), key=lambda r: r[0])


def _page_500(sort: str) -> str:
    """The link "Next" gives on page 499: after the 24,950th row of the order (found here
    with OFFSET, untimed; the page itself seeks by keyset)."""
    order = session_order(sort)
    row = ChargingSession.objects.order_by(*order.ordering())[499 * 50 - 1]
    return "/sessions/?" + urlencode({"sort": sort, "after": order.token(row)})


def cases() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(label, url): staff pages, then the admin's. A label starting with "+" is a fragment
    the page above it asks for (htmx) as soon as it is shown."""
    site = Site.objects.order_by("pk").first()
    terminal = Terminal.objects.order_by("pk").first()
    # A captured session of some days ago: its day, amount and last 4 are what a driver has.
    newest = ChargingSession.objects.order_by("-requested_at").values_list("requested_at")[0][0]
    day = timezone.localdate(newest - timedelta(days=3), timezone.get_fixed_timezone(60))
    probe = (
        ChargingSession.objects.filter(
            close_reason="captured", requested_at__gte=newest - timedelta(days=3, hours=-10)
        )
        .order_by("requested_at")
        .first()
    )
    probe_day = site_localtime(probe.requested_at, probe.site).date()
    amount = f"{probe.captured_amount_minor / 100:.2f}"
    week_from = (day - timedelta(days=6)).isoformat()
    terminal_page = f"/terminals/{terminal.public_id}/"
    staff = [
        ("sessions list, first page", "/sessions/"),
        ("sessions list, page 500 (keyset)", _page_500(DEFAULT_SORT)),
        (
            "sessions list, site + 7 days",
            f"/sessions/?site={site.public_id}&from={week_from}&to={day.isoformat()}",
        ),
        ("sessions list, search last 4", f"/sessions/?q={probe.pan_last4}"),
        ("sessions list, sorted by amount", "/sessions/?sort=-total"),
        ("sessions list, by amount, page 500", _page_500("-total")),
        (
            "receipts search (date+amount+last4)",
            f"/receipts/?date={probe_day.isoformat()}&amount={amount}&last4={probe.pan_last4}",
        ),
        (
            "CSV export, one day",
            f"/sessions/?from={day.isoformat()}&to={day.isoformat()}&format=csv",
        ),
        ("terminal page", terminal_page),
        ("+ its recent transactions (htmx)", f"{terminal_page}?part=transactions"),
        ("closings list", "/closings/"),
    ]
    meta = ChargingSession._meta
    admin = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    admin_cases = [
        ("admin changelist, first page", admin),
        ("admin changelist, search last 4", f"{admin}?q={probe.pan_last4}"),
        (
            "admin changelist, filter",
            f"{admin}?close_reason__exact=declined&site__id__exact={site.pk}",
        ),
    ]
    return staff, admin_cases


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def csv_peak(client, url) -> tuple[int, int]:
    """Peak Python memory while the CSV streams, and its rows: constant memory means the peak
    does not grow with the rows (the response is consumed chunk by chunk, never joined)."""
    tracemalloc.start()
    response = client.get(url)
    rows = sum(chunk.count(b"\n") for chunk in response.streaming_content)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, rows - 1


def _client(username: str, **fields) -> tuple[Client, object]:
    user, _ = get_user_model().objects.get_or_create(username=username, defaults=fields)
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client, user


def _as_loaded(results) -> list[tuple[str, list]]:
    """Each page followed by fragments it loads at once (the "+" rows after it), with them."""
    groups: list[tuple[str, list]] = []
    for row in results:
        if row[0].startswith("+") and groups:
            groups[-1][1].append(row)
        else:
            groups.append((row[0], [row]))
    return [(label, rows) for label, rows in groups if len(rows) > 1]


def measure(repeats: int) -> None:
    admin_client, _ = _client("bench-admin", is_staff=True, is_superuser=True)
    staff_client, operator = _client("bench-operator")
    operator.groups.add(Group.objects.get(name=OPERATOR))
    staff, admin_cases = cases()
    results = []
    for client, each in ((admin_client, admin_cases), (staff_client, staff)):
        for label, url in each:
            headers = HTMX if label.startswith("+") else None
            seconds, queries, body = best_of(client, url, repeats, headers)
            results.append((label, url, seconds, queries, body))
    base = results[0][2]
    print(f"\n{'page':<38} {'seconds':>8} {'queries':>8} {'x admin p1':>10}  verdict")
    for label, _url, seconds, queries, _body in results:
        is_staff_page = not label.startswith("admin")
        ok = seconds <= 0.2 * base and len(queries) <= 10
        verdict = ("ok" if ok else "MISSES") if is_staff_page else ""
        print(f"{label:<38} {seconds:8.3f} {len(queries):8d} {seconds / base:10.2f}  {verdict}")
    for label, rows in _as_loaded(results):
        seconds = sum(r[2] for r in rows)
        queries = " + ".join(str(len(r[3])) for r in rows)
        ok = seconds <= 0.2 * base and all(len(r[3]) <= 10 for r in rows)
        print(
            f"{label + ', as loaded':<38} {seconds:8.3f} {queries:>8} {seconds / base:10.2f}"
            f"  {'ok' if ok else 'MISSES'}"
        )
    csv_label, csv_url = next((label, url) for label, url in staff if "CSV" in label)
    peak, rows = csv_peak(staff_client, csv_url)
    print(f"\n{csv_label}: {rows:,} rows, peak Python memory {peak / 1024:.0f} KiB (tracemalloc)")
    slowest = max((r for r in results if not r[0].startswith("admin")), key=lambda r: r[2])
    label, url, seconds, queries, _body = slowest
    query = max(queries, key=lambda q: float(q["time"]))
    print(
        f"\nslowest staff page: {label} ({url}), {seconds:.3f} s; its slowest query "
        f"({float(query['time']) * 1000:.1f} ms of {len(queries)}):\n{query['sql']}\n"
    )
    plan = explain(query["sql"])
    print(plan)
    seq = [
        line.strip() for line in plan.splitlines() if "Seq Scan on charging_chargingsession" in line
    ]
    print(f"\nSeq Scan on charging_chargingsession: {'YES: ' + '; '.join(seq) if seq else 'none'}")
    # Any staff page's query that scans all sessions sequentially, not only the slowest.
    checked = seqs = 0
    for label, _url, _s, queries, _b in results:
        if label.startswith("admin"):
            continue
        for q in queries:
            if "charging_chargingsession" in q["sql"]:
                checked += 1
                plan = explain(q["sql"])
                if "Seq Scan on charging_chargingsession" in plan:
                    print(
                        f"  seq scan over sessions in {label}: {float(q['time']) * 1000:.0f} ms "
                        f"{q['sql'][:160]}"
                    )
                    seqs += 1
    print(f"staff pages' queries over sessions explained: {checked}, sequential scans: {seqs}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N per page")
    parser.add_argument(
        "--reuse", "--keep", action="store_true", help="keep the database and reuse its data"
    )
    parser.add_argument("--database", help="its name (default: <DATABASE_URL's>_bench_staff)")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("needs PostgreSQL: set DATABASE_URL=postgresql://...", file=sys.stderr)
        return 2
    setup_test_environment()
    name = args.database or f"{connection.settings_dict['NAME']}_bench_staff"
    with bench_database(name, keep=args.reuse):
        have = ChargingSession.objects.count()
        if have != args.sessions:
            if have:
                with connection.cursor() as cursor:
                    tables = [
                        m._meta.db_table
                        for m in (ClosingBrandTotal, PeriodClosing, TerminalTransaction,
                                  ChargingSession, Connector, Terminal, Site)
                    ]  # fmt: skip
                    cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
            started = time.perf_counter()
            with transaction.atomic():
                populate(args.sessions)
            print(
                f"wrote {args.sessions:,} sessions, "
                f"{TerminalTransaction.objects.count():,} terminal transactions in "
                f"{time.perf_counter() - started:.1f} s"
            )
        else:
            print(f"reusing {have:,} sessions in {connection.settings_dict['NAME']}")
        measure(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
