"""Load one emulator process with a fleet of terminals and measure what it adds.

    .venv/bin/python benchmarks/emulator_fleet.py [--count 500] [--window 2.0]

Starts ONE emulator process (``--count`` terminals, channel-1 arrangement "terminal", no
simulated delay), connects a minimal channel-1 responder to every terminal, pre-presents a card
on each, then drives every terminal at once from one asyncio client:

1. burst: a Diagnosis to all terminals in the same instant (worst case: pure queueing);
2. paced: a Diagnosis per terminal at a random moment within ``--window`` seconds, all terminals
   active together (a busy car park, not a synchronised one);
3. paced authorise: a CardPreAuthorisation per terminal (card wait satisfied by the pre-presented
   card, DeliveryBox, receipts and displays over channel 1).

Prints whether every request was answered, p50/p99 round-trip latency per phase (client to
emulator and back, so an upper bound on what the emulator adds) and the emulator's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminals.emulator.harness import EmulatorProcess  # noqa: E402
from terminals.opi import messages as m  # noqa: E402
from terminals.opi.framing import encode_frame, read_frame_async  # noqa: E402

_REQUEST_ID = re.compile(rb'<DeviceRequest[^>]*\sRequestID="([^"]+)"')


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident set size of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def channel1_responder(host: str, port: int, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while not stop.is_set():
            try:
                frame = await read_frame_async(reader)
            except Exception:
                return
            # Minimal on purpose: a regex instead of a full parse keeps the client's CPU (same
            # machine) from inflating what we measure of the emulator.
            match = _REQUEST_ID.search(frame)
            assert match is not None, frame[:200]
            answer = m.DeviceResponse("Output", match.group(1).decode(), "Success")
            writer.write(encode_frame(m.encode(answer)))
    finally:
        writer.close()


_ids = iter(range(1, 10**9))


def frame_for(root: str, request_type: str, amount_minor: int | None = None) -> bytes:
    request_id = str(next(_ids))
    if root == "ServiceRequest":
        message: m.CardServiceRequest | m.ServiceRequest = m.ServiceRequest(
            request_type, request_id, "BENCH"
        )
    else:
        message = m.CardServiceRequest(
            request_type,
            request_id,
            "BENCH",
            amount=None if amount_minor is None else m.Amount(amount_minor, "EUR"),
        )
    return encode_frame(m.encode(message))


async def one_request(terminal: dict, frame: bytes, delay: float) -> tuple[float, str, float]:
    """Connect, send, read the answer: (request latency, OverallResult, connect latency).

    Latency is measured from writing the request to having the answer parsed: what the
    emulator adds on top of a connection the POS already has. Connect time is reported apart.
    """
    if delay:
        await asyncio.sleep(delay)
    connecting = time.perf_counter()
    reader, writer = await asyncio.open_connection(terminal["host"], terminal["port0"])
    started = time.perf_counter()
    try:
        writer.write(frame)
        response = m.parse(await asyncio.wait_for(read_frame_async(reader), 60))
    finally:
        writer.close()
    return time.perf_counter() - started, response.overall_result, started - connecting


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (from /proc/<pid>/stat)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(
    name: str,
    terminals: list[dict],
    frames: list[bytes],
    window: float,
    rng: random.Random,
    pid: int,
) -> dict:
    cpu_before = cpu_seconds(pid)
    delays = [rng.uniform(0, window) if window else 0.0 for _ in terminals]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_request(t, f, d) for t, f, d in zip(terminals, frames, delays, strict=True)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    latencies = [r[0] * 1000 for r in results if isinstance(r, tuple)]
    connects = [r[2] * 1000 for r in results if isinstance(r, tuple)]
    outcomes: dict[str, int] = {}
    for result in results:
        key = result[1] if isinstance(result, tuple) else type(result).__name__
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "phase": name,
        "requests": len(terminals),
        "all_answered": len(latencies) == len(terminals),
        "outcomes": outcomes,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "max_ms": round(max(latencies), 2) if latencies else None,
        "connect_p50_ms": round(statistics.median(connects), 2) if connects else None,
        "emulator_cpu_ms_per_request": round(cpu * 1000 / len(terminals), 2),
        "wall_s": round(elapsed, 2),
    }


async def drive(emulator: EmulatorProcess, window: float) -> list[dict]:
    terminals = emulator.terminals
    pid = emulator.process.pid
    rng = random.Random(1)
    stop = asyncio.Event()
    responders = [
        asyncio.create_task(channel1_responder(t["host"], t["port1"], stop)) for t in terminals
    ]
    await asyncio.sleep(0.5)  # let every channel-1 connection register
    results = []
    diagnosis = [frame_for("ServiceRequest", "Diagnosis") for _ in terminals]
    results.append(await phase("burst diagnosis", terminals, diagnosis, 0.0, rng, pid))
    diagnosis = [frame_for("ServiceRequest", "Diagnosis") for _ in terminals]
    results.append(await phase("paced diagnosis", terminals, diagnosis, window, rng, pid))
    authorise = [frame_for("CardServiceRequest", "CardPreAuthorisation", 2500) for _ in terminals]
    results.append(await phase("paced authorise", terminals, authorise, window, rng, pid))
    stop.set()
    for task in responders:
        task.cancel()
    await asyncio.gather(*responders, return_exceptions=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--window", type=float, default=2.0, help="paced phases spread over (s)")
    args = parser.parse_args()

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client needs 1000+ sockets too

    started = time.perf_counter()
    with EmulatorProcess(
        count=args.count, card_wait=10, extra_args=["--log-level", "WARNING"], ready_timeout=60
    ) as emulator:
        startup = time.perf_counter() - started
        pid = emulator.process.pid
        idle_rss, _ = rss_mb(pid)
        for terminal in emulator.terminals:
            emulator.present_card(terminal["terminal_id"], "visa_ok")
        results = asyncio.run(drive(emulator, args.window))
        rss, peak = rss_mb(pid)
        reservations = len(emulator.ledger(kind="reservation"))
    report = {
        "terminals": args.count,
        "startup_s": round(startup, 2),
        "phases": results,
        "reservations_in_ledger": reservations,
        "all_answered": all(r["all_answered"] for r in results),
        "emulator_rss_mb": {
            "idle": round(idle_rss, 1),
            "after": round(rss, 1),
            "peak": round(peak, 1),
        },
    }
    print(json.dumps(report, indent=2))
    return 0 if report["all_answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
