"""From "unplugged" to the capture request leaving for the terminal, on the real stack.

    DATABASE_URL=postgresql://... CELERY_BROKER_URL=redis://... \
        .venv/bin/python benchmarks/unplug_latency.py [--sessions 100] [--terminals 8]

Runs a fault-free soak (``manage.py soak --fault-rate 0``: emulator, device channel, Celery
workers, gunicorn for the charger API, simulated chargers and drivers; with ``CELERY_BROKER_URL``
unset, the embedded ``filesystem://`` broker) on the database of DATABASE_URL, then reads its
sessions back: for each captured one, the time from the charger's ``unplugged`` call
(``unplugged_at``) to its capture request's row, which is written just before the request is
sent (write before send). That is evpay's own part of issue #19 P2: the terminal's time to
answer comes after it. A capture can also wait for its terminal while the other connector's
request holds it (one request per terminal at a time); those waits are counted in, so the p99
is an upper bound. Also prints the run's sessions per second (not P1's 500-terminal figure).
Target (P2): p99 < 1 s with Redis, < 2 s on the embedded default.

The soak terminates the database's other connections and flushes the Redis database: give it
its own of both. Its chaos thread fires every 200 s at fault rate 0, so keep runs shorter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--terminals", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=float, default=60)
    args = parser.parse_args()
    started = time.monotonic()
    soak = subprocess.run(
        [sys.executable, "manage.py", "soak", "--sessions", str(args.sessions),
         "--terminals", str(args.terminals), "--workers", str(args.workers),
         "--fault-rate", "0", "--seed", "1", "--window", str(args.window),
         "--time-limit", "900"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    text = soak.stdout
    try:
        figures = json.loads(text[text.index("{\n") : text.rindex("}") + 1])
    except ValueError:
        print(text[-3000:], soak.stderr[-3000:], sep="\n")
        return 1
    import django

    django.setup()
    from django.conf import settings

    from sessions.models import ChargingSession, Operation
    from terminals.models import Site

    site = Site.objects.get(name=f"Soak {figures['run']}")
    rows = ChargingSession.objects.filter(
        site=site,
        unplugged_at__isnull=False,
        transactions__operation=Operation.CAPTURE,
    ).values_list("pk", "unplugged_at", "transactions__created_at")
    # The first capture request of each session (a resend would come later).
    first = {}
    for pk, unplugged, requested in rows:
        first[pk] = min(first.get(pk, (unplugged, requested)), (unplugged, requested))
    delays = [(requested - unplugged).total_seconds() for unplugged, requested in first.values()]
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    print(
        f"soak: {figures['sessions']} sessions on {args.terminals} terminals, "
        f"{args.workers} workers, broker {broker}: {figures['seconds']} s of traffic "
        f"({figures['sessions'] / max(figures['seconds'], 1):.2f} sessions/s), "
        f"{elapsed:.0f} s in all; outcomes {figures['sessions_by_outcome']}; "
        f"faults {figures['faults_injected']}; must-be-0 figures "
        f"{[figures[k] for k in ('double_captures', 'lost_money', 'ledger_disagreements')]}"
    )
    if not delays:
        print("no captured session with an unplug time")
        return 1
    print(
        f"unplugged -> capture request written, {len(delays)} captures: "
        f"p50 {statistics.median(delays) * 1000:.0f} ms, p99 {percentile(delays, 0.99) * 1000:.0f} "
        f"ms, max {max(delays) * 1000:.0f} ms (target p99 < "
        f"{'1' if broker == 'redis' else '2'} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
