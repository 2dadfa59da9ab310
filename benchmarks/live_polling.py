"""Staff tabs polling the live fragments, against gunicorn as in the Procfile, on 1 M sessions.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/live_polling.py \
        [--database NAME] [--tabs 200] [--seconds 60] [--no-etag]

Uses the database benchmarks/staff_pages.py leaves with --reuse (``--database``, default
``<DATABASE_URL's name>_bench_staff``; migrated first), starts gunicorn with the Procfile's web
line (``evpay.wsgi``, 4 workers x 4 threads, access log; DEBUG off, after collectstatic) and
signs in ``--tabs`` staff sessions. Tab i shows one of the four live pages, in turn: the
overview (polls every 10 s), the terminal list (5 s), a terminal's page (its status, 5 s) and an
open session's page (its summary, 10 s). Each tab loads its page once, then polls its fragment
at that interval from a random phase, the way static/js/evpay.js and htmx do: HX-Request,
X-Evpay-Poll, the page's stamp or cursor, and If-None-Match with the fragment's last ETag
(``--no-etag``: without it, for the same-run comparison). Meanwhile the data moves as in
production: each terminal is "seen" every 30 s (the status poll's schedule) and each open
session's meter moves every 60 s.

Prints, over the ``--seconds`` after a warm-up: requests per second by fragment and status,
p50/p99 latency, and the CPU of the gunicorn processes (master and workers, from /proc) as a
percentage of one core, beside this client's own. Target (issue #19 P4): 200 tabs, CPU < 20 %
of one core, p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The fragments and their real intervals (templates: hx-trigger="every …").
INTERVALS = {"overview": 10, "terminals": 5, "terminal": 5, "session": 10}
# The status poll's schedule (evpay/migrations/0008_job_schedules.py) and a meter update a
# minute; the page loads are spread over the first PAGE_LOAD_SECONDS of the warm-up.
STATUS_POLL_SECONDS, CYCLE_SECONDS = 30, 60
PAGE_LOAD_SECONDS, WARMUP_SECONDS = 10, 20
TICKS = os.sysconf("SC_CLK_TCK")
# The sessions are signed in here and read by gunicorn: one key for both.
BENCH_SECRET = "benchmark-only-" + "x" * 40


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="default: <DATABASE_URL's name>_bench_staff")
    parser.add_argument("--tabs", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-etag", action="store_true", help="polls without If-None-Match")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=int(os.environ.get("DB_CONN_MAX_AGE", 0)),
        help="the server's DB_CONN_MAX_AGE (default: as in the environment, else 0); "
        "above 0 turns the connection pool off, as the settings require",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=int(os.environ.get("DB_POOL_MAX_SIZE", 10)),
        help="the server's DB_POOL_MAX_SIZE (default: as in the environment, else 10; 0: off)",
    )
    args = parser.parse_args()
    if args.conn_max_age:
        args.pool = 0
    return args


def bench_url(args) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("needs PostgreSQL: set DATABASE_URL=postgresql://...")
    parts = urlsplit(url)
    name = args.database or f"{parts.path.lstrip('/')}_bench_staff"
    return urlunsplit(parts._replace(path=f"/{name}"))


def server_env(database_url: str, conn_max_age: int, pool: int) -> dict:
    return os.environ | {
        "DB_CONN_MAX_AGE": str(conn_max_age),
        "DB_POOL_MAX_SIZE": str(pool),
        "DEBUG": "0",
        "SECRET_KEY": BENCH_SECRET,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }


def prepare(tabs: int):
    """Migrate, sign in `tabs` viewers' sessions, and pick each tab's page."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.test import Client

    from sessions.models import ChargingSession, SessionState
    from terminals.models import Terminal

    call_command("migrate", verbosity=0)
    if not ChargingSession.objects.exists():
        raise SystemExit("no sessions: run benchmarks/staff_pages.py --reuse first")
    user, _ = get_user_model().objects.get_or_create(username="bench-viewer")
    user.groups.add(Group.objects.get(name="viewer"))
    terminals = list(Terminal.objects.order_by("pk").values_list("public_id", flat=True))
    open_sessions = list(
        ChargingSession.objects.exclude(state=SessionState.CLOSED).values_list(
            "public_id", flat=True
        )[:100]
    )
    pages = {
        "overview": lambda i: "/",
        "terminals": lambda i: "/terminals/",
        "terminal": lambda i: f"/terminals/{terminals[i % len(terminals)]}/",
        "session": lambda i: f"/sessions/{open_sessions[i % len(open_sessions)]}/",
    }
    kinds = list(INTERVALS)
    plan = []
    for i in range(tabs):
        client = Client()
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        kind = kinds[i % len(kinds)]
        cookie = (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
        plan.append((kind, pages[kind](i // len(kinds)), cookie))
    return plan


def live_writes(stop: threading.Event) -> None:
    """What production keeps doing under the tabs: status polls mark terminals seen, meters
    move. Spread evenly: one terminal every STATUS_POLL_SECONDS / terminals seconds."""
    from django.db import connection
    from django.db.models import F
    from django.utils import timezone

    from sessions.models import ChargingSession, SessionState
    from terminals.models import Terminal

    terminals = list(Terminal.objects.values_list("pk", flat=True))
    sessions = list(
        ChargingSession.objects.exclude(state=SessionState.CLOSED).values_list("pk", flat=True)
    )
    # One minute of writes, repeated: each terminal seen every STATUS_POLL_SECONDS, each open
    # session's meter once.
    events = [
        (STATUS_POLL_SECONDS * (k + i / len(terminals)), "t", pk)
        for k in range(CYCLE_SECONDS // STATUS_POLL_SECONDS)
        for i, pk in enumerate(terminals)
    ]
    events += [(CYCLE_SECONDS * i / len(sessions), "s", pk) for i, pk in enumerate(sessions)]
    events.sort()
    started, cycle = time.monotonic(), 0
    while not stop.is_set():
        for at, kind, pk in events:
            delay = started + cycle * CYCLE_SECONDS + at - time.monotonic()
            if stop.wait(max(0, delay)):
                break
            if kind == "t":
                Terminal.objects.filter(pk=pk).update(last_seen_at=timezone.now())
            else:
                ChargingSession.objects.filter(pk=pk).update(energy_wh=F("energy_wh") + 100)
        cycle += 1
    connection.close()


async def http_get(port: int, path: str, headers: dict) -> tuple[int, dict, bytes, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await reader.read(-1)
    writer.close()
    seconds = time.perf_counter() - started
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        response_headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), response_headers, body, seconds


SEEN = re.compile(rb'name="seen" value="([0-9a-f]+)"')
SINCE = re.compile(rb'id="terminal-poller"[^>]*hx-get="[^"]*since=([^"&]+)"')


def _since(body: bytes) -> str:
    from urllib.parse import unquote

    match = SINCE.search(body)
    return unquote(match.group(1).decode().replace("&amp;", "&")) if match else ""


async def tab(port, kind, page, cookie, args, results, window) -> None:
    base = {"Cookie": cookie}
    await asyncio.sleep(random.uniform(0, PAGE_LOAD_SECONDS))
    status, _headers, body, _s = await http_get(port, page, base)
    if status != 200:
        raise SystemExit(f"{page}: HTTP {status}")
    params = {}
    if kind in ("terminal", "session"):
        params = {"part": "status" if kind == "terminal" else "summary"}
        params["seen"] = SEEN.search(body).group(1).decode()
    elif kind == "terminals":
        params = {"since": _since(body)}
    etag = None
    interval = INTERVALS[kind]
    await asyncio.sleep(random.uniform(0, interval))
    poll_headers = base | {"HX-Request": "true", "X-Evpay-Poll": "1", "HX-Current-URL": page}
    next_at = time.monotonic()
    while time.monotonic() < window["end"]:
        headers = poll_headers | ({"If-None-Match": etag} if etag and not args.no_etag else {})
        path = f"{page}?{urlencode(params)}" if params else page
        status, response_headers, body, seconds = await http_get(port, path, headers)
        if status == 200:
            etag = response_headers.get("etag")
            if kind == "terminals":
                params["since"] = _since(body) or params["since"]
            stamp = response_headers.get("hx-trigger")
            if stamp and kind in ("terminal", "session"):
                # The page's activity/panels part refetches and brings the new stamp.
                _s, _h, page_body, _t = await http_get(port, page, base)
                params["seen"] = SEEN.search(page_body).group(1).decode()
        if window["start"] <= time.monotonic() < window["end"]:
            results.append((kind, status, seconds))
        next_at += interval
        await asyncio.sleep(max(0, next_at - time.monotonic()))


def percentile(sorted_values, share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(share * len(sorted_values)) - 1)]


def cpu_ticks(pids) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def gunicorn_pids(master: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == master:
            children.append(int(stat.parent.name))
    return [master, *children]


async def run_tabs(plan, args, window):
    results = []
    await asyncio.gather(
        *(tab(args.port, kind, page, cookie, args, results, window) for kind, page, cookie in plan)
    )
    return results


def main() -> int:
    args = parse_args()
    database_url = bench_url(args)
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DEBUG", "1")
    os.environ["SECRET_KEY"] = BENCH_SECRET
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")
    import django

    django.setup()
    plan = prepare(args.tabs)
    env = server_env(database_url, args.conn_max_age, args.pool)
    venv_bin = Path(sys.executable).parent
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    server = subprocess.Popen(
        [str(venv_bin / "gunicorn"), "evpay.wsgi", "--bind", f"127.0.0.1:{args.port}",
         "--workers", "4", "--threads", "4", "--access-logfile", "-"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    stop = threading.Event()
    writer = threading.Thread(target=live_writes, args=(stop,), daemon=True)
    try:
        for _ in range(100):
            try:
                status = asyncio.run(http_get(args.port, "/healthz", {}))[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"gunicorn did not answer: {server.stderr.read1().decode()}")
        writer.start()
        now = time.monotonic()
        window = {"start": now + WARMUP_SECONDS, "end": now + WARMUP_SECONDS + args.seconds}
        measured = {}

        async def measure():
            await asyncio.sleep(max(0, window["start"] - time.monotonic()))
            pids = gunicorn_pids(server.pid)
            measured["start"] = (cpu_ticks(pids), os.times(), time.monotonic())
            await asyncio.sleep(max(0, window["end"] - time.monotonic()))
            measured["end"] = (cpu_ticks(gunicorn_pids(server.pid)), os.times(), time.monotonic())

        async def both():
            return (await asyncio.gather(run_tabs(plan, args, window), measure()))[0]

        results = asyncio.run(both())
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    (t0, own0, w0), (t1, own1, w1) = measured["start"], measured["end"]
    wall = w1 - w0
    server_cpu = (t1 - t0) / TICKS / wall * 100
    own_cpu = ((own1.user + own1.system) - (own0.user + own0.system)) / wall * 100
    latencies = sorted(s for _k, _st, s in results)
    by = Counter((k, st) for k, st, _s in results)
    per_kind = defaultdict(list)
    for k, _st, s in results:
        per_kind[k].append(s)
    mode = "without If-None-Match" if args.no_etag else "with ETag / If-None-Match"
    mode += f", DB_CONN_MAX_AGE={args.conn_max_age}, DB_POOL_MAX_SIZE={args.pool}"
    print(f"{args.tabs} tabs, {wall:.0f} s measured, {mode}: {len(results) / wall:.1f} polls/s")
    for kind in INTERVALS:
        statuses = ", ".join(f"{st}: {n}" for (k, st), n in sorted(by.items()) if k == kind)
        times = sorted(per_kind[kind])
        if times:
            print(
                f"  {kind:<10} every {INTERVALS[kind]:>2} s  {statuses:<22} p50 "
                f"{statistics.median(times) * 1000:6.1f} ms  p99 "
                f"{percentile(times, 0.99) * 1000:6.1f} ms"
            )
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    print(f"all polls: p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 < 100 ms)")
    by_status = defaultdict(list)
    for _k, st, s in results:
        by_status[st].append(s)
    if by_status.get(304) and by_status.get(200):
        unchanged, changed = statistics.median(by_status[304]), statistics.median(by_status[200])
        print(
            f"same run: an unchanged fragment's 304 p50 {unchanged * 1000:.1f} ms, a 200 p50 "
            f"{changed * 1000:.1f} ms: {unchanged / changed:.2f} of it"
        )
    print(
        f"gunicorn CPU {server_cpu:.1f} % of one core (target < 20 %); "
        f"this client {own_cpu:.1f} %; load average {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
