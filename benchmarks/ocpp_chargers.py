"""What many OCPP chargers cost one `ocpp_server` process: connect, report, be commanded.

    DEBUG=1 [DATABASE_URL=postgresql://...] .venv/bin/python benchmarks/ocpp_chargers.py \\
        [--chargers 200] [--messages 10] [--processes 1]

Creates its own database (the test database of DATABASE_URL, ``<name>_bench_ocpp``,
migrated), registers ``--chargers`` charge points with passwords, starts ``--processes``
real ``manage.py ocpp_server`` processes and connects every charger (the `ocpp` package's
1.6 charge-point side over real WebSockets, all from this process, spread over the servers).
Then each charger sends ``--messages`` calls (Heartbeat and StatusNotification, in turn) as
fast as answers come back, and finally this process queues a Reset for every charger in the
database command queue. Prints the time to connect and boot all, call latency (p50/p95/max)
and throughput, and how long queued commands take to reach their chargers (p50/p95/max):
the poll interval (0.5 s) bounds the latter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evpay.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from ocpp.routing import on  # noqa: E402
from ocpp.v16 import ChargePoint, call, call_result  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from evpay.audit import Actor  # noqa: E402
from sessions.ocpp import commands  # noqa: E402
from terminals.models import ChargePoint as ChargePointRow  # noqa: E402
from terminals.models import Site  # noqa: E402
from tests.procs import Proc  # noqa: E402


class BenchCharger(ChargePoint):
    reset_at: float | None = None

    @on("Reset")
    def on_reset(self, **_):
        self.reset_at = time.monotonic()
        return call_result.Reset(status="Accepted")


async def serve(cp) -> None:
    with contextlib.suppress(ConnectionClosed):
        await cp.start()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else 0.0


async def run_chargers(urls, credentials, messages):
    latencies: list[float] = []
    chargers: list[BenchCharger] = []
    started = time.monotonic()

    async def one(index, identity, password):
        token = base64.b64encode(f"{identity}:{password}".encode()).decode()
        ws = await connect(
            f"{urls[index % len(urls)]}/{identity}",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": f"Basic {token}"},
            open_timeout=60,
        )
        cp = BenchCharger(identity, ws, response_timeout=60)
        asyncio.ensure_future(serve(cp))
        await cp.call(
            call.BootNotification(charge_point_model="bench", charge_point_vendor="evpay")
        )
        chargers.append(cp)
        return cp

    await asyncio.gather(*(one(i, *c) for i, c in enumerate(credentials)))
    connected = time.monotonic() - started

    async def chatter(cp):
        for i in range(messages):
            t0 = time.monotonic()
            if i % 2:
                await cp.call(call.Heartbeat())
            else:
                await cp.call(
                    call.StatusNotification(
                        connector_id=1, error_code="NoError", status="Available"
                    )
                )
            latencies.append(time.monotonic() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(chatter(cp) for cp in chargers))
    chatter_seconds = time.monotonic() - t0

    loop = asyncio.get_running_loop()
    queued_at = time.monotonic()
    await loop.run_in_executor(None, queue_resets)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(cp.reset_at is None for cp in chargers):
        await asyncio.sleep(0.05)
    dispatch = [cp.reset_at - queued_at for cp in chargers if cp.reset_at is not None]
    for cp in chargers:
        await cp._connection.close()
    return connected, latencies, chatter_seconds, dispatch, len(chargers)


def queue_resets() -> None:
    for cp in ChargePointRow.objects.all():
        commands.enqueue(cp, "Reset", {"type": "Soft"}, actor=Actor.system("benchmark"))
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()

    test_settings = connection.settings_dict.setdefault("TEST", {})
    old_name = connection.settings_dict["NAME"]
    test_settings["NAME"] = f"{connection.settings_dict['NAME']}_bench_ocpp"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    servers = []
    try:
        site = Site.objects.create(name="Bench site")
        credentials = []
        for i in range(args.chargers):
            cp = ChargePointRow.objects.create(identity=f"BENCH-{i:05d}", site=site)
            credentials.append((cp.identity, cp.set_new_password()))
        urls = []
        for n in range(args.processes):
            argv = [sys.executable, "manage.py", "ocpp_server", "--port", "0"]
            # All benchmark chargers come from one address: lift the per-address bound.
            argv += ["--max-connections", str(args.chargers + 10)]
            argv += ["--max-upgrades-per-minute", str(args.chargers * 2 + 10)]
            proc = Proc(argv, log_name=f"bench_ocpp_{n}", EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS=60)
            proc.__enter__()
            servers.append(proc)
            proc.wait_for_log("OCPP server listening")
            port = proc.output().split("OCPP server listening on ws://")[1].split("/")[0]
            urls.append(f"ws://{port}/ocpp")
        connection.close()
        connected, latencies, chatter_seconds, dispatch, count = asyncio.run(
            run_chargers(urls, credentials, args.messages)
        )
        calls = len(latencies)
        print(f"database: {connection.vendor}; {args.processes} ocpp_server process(es)")
        print(f"{count} chargers connected and booted in {connected:.2f} s")
        print(
            f"{calls} calls in {chatter_seconds:.2f} s = {calls / chatter_seconds:.0f} calls/s; "
            f"latency p50 {pct(latencies, 50) * 1000:.0f} ms, p95 "
            f"{pct(latencies, 95) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
        print(
            f"{len(dispatch)}/{count} queued Resets reached their chargers: p50 "
            f"{statistics.median(dispatch):.2f} s, p95 {pct(dispatch, 95):.2f} s, max "
            f"{max(dispatch):.2f} s after queueing"
        )
    finally:
        for proc in servers:
            proc.__exit__(None, None, None)
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
