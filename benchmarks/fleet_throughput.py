"""P1: fault-free sessions per second over a fleet of emulated terminals, against the
terminal-bound limit.

    DATABASE_URL=postgresql://... CELERY_BROKER_URL=redis://... \\
        .venv/bin/python benchmarks/fleet_throughput.py [--terminals 500] [--seconds 300]

The stack is the soak's (`evpay.testbed.soak.Soak.setup`): one emulator process with
``--terminals`` terminals (two connectors each, channel 1 to our device channel), the device
channel, Celery workers, gunicorn for the charger API, and what beat does (the recovery sweep and
the session guard). The emulated terminals have fixed per-operation latencies (``--authorise``,
``--capture``: the acquirer's time) and tap the driver's card by themselves ``--tap`` seconds
after they ask for it.

Drivers: one asyncio task per connector, over plain HTTP as a charger controller would. Each
arrives ``--think`` seconds after the previous driver unplugged (and, while the connector's last
session is still settling, retries the start every ``--retry`` s), starts a session, polls it
every ``--poll`` s until the authorisation is decided, charges ``--charge`` seconds, reports
charging ended and unplugged, and leaves. Ranges are uniform.

The terminal-bound limit is what the same drivers would get from terminals that take exactly
their configured times and an evpay that takes none: a discrete-event simulation of the same
fleet (each terminal serves one request at a time, first come first served; the driver's poll
and retry cadence kept), over the same window. The figure is sessions captured per second
within the measured window (after ``--warmup``), measured / limit; target >= 0.95.

Also printed: the CPU each process used (where the time goes), the authorisation and
unplug-to-capture latencies beyond the terminal's own time, and anything that did not end in a
capture (fault-free: should be nothing).

The soak's setup terminates nothing, but give it its own database and Redis db anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")


def span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


# ------------------------------------------------------------------ the terminal-bound limit
def mean(pair: tuple[float, float]) -> float:
    return sum(pair) / 2


def first_arrival(args, rng: random.Random) -> float:
    """A connector's first driver arrives anywhere within one mean cycle: a car park already
    in use, not 1,000 drivers arriving in the same ten seconds."""
    return rng.uniform(0, mean(args.think) + mean(args.tap) + args.authorise + mean(args.charge))


def ideal_fleet(args, terminals: int, seed: int) -> dict:
    """The same drivers against terminals that take exactly their configured times and an
    evpay that adds nothing. Events are handled in time order and each request takes its
    terminal at max(arrival, terminal free): one at a time, first come first served."""
    rng = random.Random(seed)
    free_at = [0.0] * terminals
    closed_at: dict[int, float] = {}
    captured: list[float] = []
    events: list[tuple[float, int, int, str]] = []  # (time, tie-break, connector, what)
    order = 0
    for connector in range(terminals * 2):
        heapq.heappush(events, (first_arrival(args, rng), order, connector, "arrive"))
        order += 1
    while events:
        now, _, connector, what = heapq.heappop(events)
        if now > args.seconds:
            break
        terminal = connector // 2
        if what == "arrive":
            previous = closed_at.get(connector, 0.0)
            if previous > now:  # still settling: the driver retries the start every --retry
                now += args.retry * math.ceil((previous - now) / args.retry)
            begin = max(now, free_at[terminal])
            decided = begin + rng.uniform(*args.tap) + args.authorise
            free_at[terminal] = decided
            seen = now + args.poll * math.ceil((decided - now) / args.poll)
            unplugged = seen + rng.uniform(*args.charge)
            order += 1
            heapq.heappush(events, (unplugged, order, connector, "capture"))
        else:
            begin = max(now, free_at[terminal])
            free_at[terminal] = closed_at[connector] = begin + args.capture
            if args.warmup <= closed_at[connector] <= args.seconds:
                captured.append(closed_at[connector])
            order += 1
            heapq.heappush(events, (now + rng.uniform(*args.think), order, connector, "arrive"))
    window = args.seconds - args.warmup
    return {"sessions_per_s": len(captured) / window, "captured_in_window": len(captured)}


def naive_bound(args, terminals: int) -> float:
    """Closed form at mean times, without queueing: each connector's cycle, and each
    terminal's busy time per session. Not a bound: it rounds the poll up at the mean
    authorisation, where the simulation rounds each one (so it may come out a little lower)."""
    auth = mean(args.tap) + args.authorise
    cycle = mean(args.think) + args.poll * math.ceil(auth / args.poll) + mean(args.charge)
    cycle += args.capture  # the next start waits for the capture to close the session
    per_terminal = min(2 / cycle, 1 / (auth + args.capture))
    return terminals * per_terminal


# ------------------------------------------------------------------ drivers
class Api:
    """A charger controller's HTTP calls: one short connection per call, JSON both ways."""

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port, self.key = host, port, key
        self.calls: Counter = Counter()
        self.errors: Counter = Counter()

    async def call(self, method: str, path: str, body=None, idempotent=False):
        data = json.dumps(body).encode() if body is not None else b""
        head = [
            f"{method} /api/v1{path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Authorization: Bearer {self.key}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            "Connection: close",
        ]
        if idempotent:
            head.append(f"Idempotency-Key: {uuid.uuid4()}")
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            raw = await asyncio.wait_for(reader.read(), 60)
        finally:
            writer.close()
        header, _, payload = raw.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        self.calls[method] += 1
        return status, json.loads(payload) if payload else None


class Fleet:
    def __init__(self, args, api: Api, connectors: list, deadline: float, seed: int):
        self.args, self.api, self.connectors, self.deadline = args, api, connectors, deadline
        self.rng = random.Random(seed)
        self.outcomes: Counter = Counter()
        self.authorise_waits: list[float] = []  # start call -> decision seen by the driver
        self.retries = 0

    async def sleep_until(self, moment: float) -> bool:
        await asyncio.sleep(max(0.0, moment - time.monotonic()))
        return time.monotonic() < self.deadline

    async def driver(self, connector) -> None:
        args, api, rng = self.args, self.api, random.Random(self.rng.random())
        arrive = time.monotonic() + first_arrival(args, rng)
        while await self.sleep_until(arrive):
            try:
                status, session = await api.call(
                    "POST", "/sessions", {"evse_id": connector.evse_id}, idempotent=True
                )
                if status == 409:  # the last session here is still settling
                    self.retries += 1
                    arrive = time.monotonic() + args.retry
                    continue
                if status != 202:
                    self.outcomes[f"start refused {status}"] += 1
                    arrive = time.monotonic() + args.retry
                    continue
                started = time.monotonic()
                sid = session["id"]
                while session["state"] == "authorising":
                    await asyncio.sleep(args.poll)
                    _, session = await api.call("GET", f"/sessions/{sid}")
                self.authorise_waits.append(time.monotonic() - started)
                if session["state"] != "authorised":
                    self.outcomes[f"not authorised: {session['state']}"] += 1
                    arrive = time.monotonic() + rng.uniform(*args.think)
                    continue
                await api.call("POST", f"/sessions/{sid}/charging-started", {}, idempotent=True)
                await asyncio.sleep(rng.uniform(*args.charge))
                energy = rng.randint(2_000, 20_000)
                await api.call("POST", f"/sessions/{sid}/charging-ended", {"energy_wh": energy})
                await api.call("POST", f"/sessions/{sid}/unplugged", {})
                self.outcomes["unplugged"] += 1
            except (TimeoutError, OSError, ValueError, KeyError) as exc:
                self.outcomes[f"driver error: {type(exc).__name__}"] += 1
            arrive = time.monotonic() + rng.uniform(*args.think)

    async def run(self) -> None:
        """Until the deadline: what drivers are doing then ends outside the window and counts
        for nothing, so they are stopped rather than waited for (a charge lasts minutes)."""
        tasks = [asyncio.ensure_future(self.driver(c)) for c in self.connectors]
        await asyncio.wait(tasks, timeout=max(0.0, self.deadline - time.monotonic()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ------------------------------------------------------------------ where the time goes
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def process_tree_cpu(root_pid: int) -> float:
    """CPU of a process and every live descendant (gunicorn's and Celery's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError):
            continue
        stack.extend(children.get(pid, []))
    return total


def postgres_cpu() -> float:
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if "(postgres)" in text or "(postmaster)" in text:
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


def cpu_by_role(soak, me: int) -> dict[str, float]:
    roles: dict[str, float] = Counter()
    for child in soak.children:
        role = "worker" if child.name.startswith("worker") else child.name
        roles[role] += process_tree_cpu(child.popen.pid)
    roles["drivers (this process)"] = cpu_seconds(me)
    roles["postgresql"] = postgres_cpu()
    return dict(roles)


# ------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=420, help="traffic, warm-up included")
    parser.add_argument("--warmup", type=float, default=150, help="at least a cycle")
    parser.add_argument("--authorise", type=float, default=2.0, help="terminal's authorise (s)")
    parser.add_argument("--capture", type=float, default=1.0, help="terminal's capture (s)")
    parser.add_argument("--tap", type=span, default=(0.5, 2.0), help="prompt to tap, MIN,MAX s")
    parser.add_argument("--think", type=span, default=(5.0, 15.0), help="arrival after unplug")
    parser.add_argument("--charge", type=span, default=(60.0, 120.0), help="charging, MIN,MAX s")
    parser.add_argument("--poll", type=float, default=1.0, help="driver's poll while authorising")
    parser.add_argument("--retry", type=float, default=2.0, help="start retry while settling")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=64, help="threads per worker")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--ideal-only", action="store_true", help="print the limit and stop")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.seconds:
        parser.error("--warmup must be below --seconds")

    # The mean of five draws: one simulated run of a few hundred seconds varies by a percent.
    runs = [ideal_fleet(args, args.terminals, args.seed + n) for n in range(5)]
    limit = {
        "sessions_per_s": statistics.mean(r["sessions_per_s"] for r in runs),
        "captured_in_window": round(statistics.mean(r["captured_in_window"] for r in runs)),
    }
    bound = naive_bound(args, args.terminals)
    print(
        f"terminal-bound limit: {limit['sessions_per_s']:.2f} sessions/s "
        f"({limit['captured_in_window']} captured in the {args.seconds - args.warmup:.0f} s window, "
        f"simulated); closed form at mean times, no queueing: {bound:.2f} sessions/s",
        flush=True,
    )
    if args.ideal_only:
        return 0

    import resource
    import signal

    import django

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)  # unwinds through teardown: no stack left running

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per driver call
    django.setup()
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings

    # This process's threads (the sweeper) never close their connections: no pool here.
    settings.DATABASES["default"]["OPTIONS"].pop("pool", None)

    from django.db import connection

    from benchmarks.benchdb import bench_database

    if connection.vendor != "postgresql":
        raise SystemExit("needs PostgreSQL: set DATABASE_URL=postgresql://...")
    # A database of its own, new each run: rows left SENT by an earlier, interrupted run
    # would have the recovery sweep working on terminals that are gone.
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"{parts.path.lstrip('/')}_bench_fleet"
    with bench_database(name):
        # The stack as deployed: DEBUG off (no query log, no debug cursor), the pool on.
        os.environ.update(
            DATABASE_URL=urlunsplit(parts._replace(path=f"/{name}")),
            DEBUG="0",
            SECRET_KEY="fleet-benchmark-" + uuid.uuid4().hex,
            ALLOWED_HOSTS="127.0.0.1",
            SECURE_SSL_REDIRECT="0",
        )
        import subprocess

        # gunicorn with DEBUG off refuses to start without them (as in the Procfile).
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], check=True
        )
        return run_stack(args, limit, bound)


def run_stack(args, limit: dict, bound: float) -> int:
    from evpay.testbed.soak import Soak
    from sessions.models import ChargingSession, Operation, TerminalTransaction

    soak = Soak(
        sessions=0,
        terminals=args.terminals,
        fault_rate=0,
        seed=args.seed,
        time_limit=args.seconds + 600,
        workers=args.workers,
        window=120,
        stdout=sys.stdout,
        ocpp_share=0,
        emulator_args=[
            "--auto-tap",
            "--auto-tap-card", "visa_ok",
            "--auto-tap-delay", f"{args.tap[0]},{args.tap[1]}",
            "--latency", f"authorise={args.authorise},capture={args.capture}",
            "--log-level", "WARNING",
        ],
        worker_concurrency=args.concurrency,
        web_workers=args.web_workers,
        web_threads=args.web_threads,
    )  # fmt: skip
    try:
        soak.setup()
        print(f"stack up: logs in {soak.log_dir}", flush=True)
        sweeper = threading.Thread(target=soak._sweeper, daemon=True)
        sweeper.start()
        api = Api("127.0.0.1", soak.web_port, soak.api_key)
        started = time.monotonic()
        wall_start = time.time()
        cpu_before = cpu_by_role(soak, os.getpid())
        fleet = Fleet(args, api, soak.connectors, started + args.seconds, args.seed)
        asyncio.run(fleet.run())
        cpu_after = cpu_by_role(soak, os.getpid())
        elapsed = time.monotonic() - started
        time.sleep(5)  # the last captures land
        window_from = wall_start + args.warmup
        window_to = wall_start + args.seconds
        from datetime import UTC, datetime

        sessions = ChargingSession.objects.filter(site=soak.site)
        in_window = sessions.filter(
            close_reason="captured",
            closed_at__gte=datetime.fromtimestamp(window_from, UTC),
            closed_at__lte=datetime.fromtimestamp(window_to, UTC),
        ).count()
        measured = in_window / (args.seconds - args.warmup)
        outcomes = Counter(sessions.values_list("state", "close_reason"))
        delays = []
        for unplugged, requested in TerminalTransaction.objects.filter(
            session__site=soak.site,
            operation=Operation.CAPTURE,
            session__unplugged_at__isnull=False,
        ).values_list("session__unplugged_at", "created_at"):
            delays.append((requested - unplugged).total_seconds())
        cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after}
        total_cpu = sum(cpu.values())
        waits = fleet.authorise_waits
        report = {
            "terminals": args.terminals,
            "connectors": len(soak.connectors),
            "window_s": args.seconds - args.warmup,
            "measured_sessions_per_s": round(measured, 2),
            "terminal_bound_sessions_per_s": round(limit["sessions_per_s"], 2),
            "ratio": round(measured / limit["sessions_per_s"], 3),
            "closed_form_sessions_per_s": round(bound, 2),
            "sessions_by_state": {f"{s}/{r or '-'}": n for (s, r), n in outcomes.items()},
            "driver_outcomes": dict(fleet.outcomes),
            "start_retries_while_settling": fleet.retries,
            "api_calls": dict(api.calls),
            "authorise_seen_after_s": {
                "p50": round(statistics.median(waits), 2) if waits else None,
                "p99": round(percentile(waits, 0.99), 2) if waits else None,
                "terminal_own": f"{args.tap[0] + args.authorise}..{args.tap[1] + args.authorise}",
            },
            "unplug_to_capture_request_s": {
                "p50": round(statistics.median(delays), 3) if delays else None,
                "p99": round(percentile(delays, 0.99), 3) if delays else None,
            },
            "cpu_seconds": cpu,
            "cpu_cores_busy": round(total_cpu / elapsed, 2),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(report, indent=2))
        return 0 if report["ratio"] >= 0.95 else 1
    finally:
        soak.teardown()


if __name__ == "__main__":
    sys.exit(main())
