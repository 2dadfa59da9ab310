"""Hammer the embedded broker with several processes and count errors and lost messages.

    .venv/bin/python benchmarks/broker_stress.py [--transport atomic|stock] [--seconds 180]

Without Django or Celery, the way the stack uses kombu's filesystem transport: ``--producers``
processes publish numbered messages to the direct exchange ``celery`` while ``--consumers``
processes drain that queue (as workers do), and every process also re-binds and un-binds its
own queue on a fanout exchange and broadcasts to it several times a second (what the remote
control "pidbox" of each worker does on start-up, on stop and on every ``inspect``). The
consumers poll every 10 ms instead of Celery's 1 s, so races surface in minutes rather than
hours. At the end the consumers drain until idle; the script prints one JSON object:
sent, received, duplicates, lost, and the errors each process caught (kept going after).

``stock`` is kombu's own ``filesystem`` transport; ``atomic`` is ``evpay.broker:Transport``;
``sqla`` is kombu's SQLAlchemy transport on SQLite (needs SQLAlchemy on the path).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = {"stock": "filesystem", "atomic": "evpay.broker:Transport", "sqla": "sqla"}


def _connection(transport: str, folder: Path):
    from kombu import Connection

    options = {
        "data_folder_in": str(folder / "out"),
        "data_folder_out": str(folder / "out"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.01,
    }
    if transport == "sqla":  # needs SQLAlchemy (not a dependency of evpay)
        # Its transport options go to create_engine(): only the polling interval (read first).
        conn = Connection(f"sqla+sqlite:///{folder / 'broker.sqlite3'}")
        conn.transport.polling_interval = 0.01
        return conn
    return Connection(transport=TRANSPORTS[transport], transport_options=options)


def _entities(name: str):
    from kombu import Exchange, Queue

    work = Queue("celery", Exchange("celery", "direct"), routing_key="celery")
    control = Exchange("stress.pidbox", "fanout", durable=False)
    own = Queue(f"{name}.stress.pidbox", control, durable=False)
    return work, control, own


def _churn_control(conn, control, own, errors) -> None:
    """What a worker's pidbox does: bind, broadcast, unbind (errors counted, not fatal)."""
    try:
        channel = conn.default_channel
        own(channel).declare()
        with conn.Producer() as producer:
            producer.publish({"ping": True}, exchange=control, declare=[control])
        own(channel).delete()
    except Exception as exc:
        errors[f"{type(exc).__name__}: {exc}"[:120]] += 1


def producer(index: int, transport: str, folder: Path, stop_at: float, results) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    name = f"p{index}"
    work, control, own = _entities(name)
    errors: collections.Counter = collections.Counter()
    sent, last_churn = 0, 0.0
    conn = _connection(transport, folder)
    while time.monotonic() < stop_at:
        try:
            with conn.Producer() as producer:
                producer.publish(
                    {"producer": name, "seq": sent, "pad": "x" * 2000},
                    exchange=work.exchange,
                    routing_key="celery",
                    declare=[work],
                )
            sent += 1
        except Exception as exc:
            errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
            conn = _connection(transport, folder)
        if time.monotonic() - last_churn > 0.2:
            _churn_control(conn, control, own, errors)
            last_churn = time.monotonic()
        time.sleep(0.002)
    results.put({"role": "producer", "name": name, "sent": sent, "errors": dict(errors)})


def consumer(index: int, transport: str, folder: Path, stop_at: float, results) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    name = f"c{index}"
    work, control, own = _entities(name)
    errors: collections.Counter = collections.Counter()
    seen: list[str] = []
    last_churn, idle_since = 0.0, None

    def on_message(body, message):
        seen.append(f"{body['producer']}:{body['seq']}")
        message.ack()

    while True:
        conn = _connection(transport, folder)
        try:
            with conn.Consumer([work], callbacks=[on_message], prefetch_count=1):
                while True:
                    before = len(seen)
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.5)
                    now = time.monotonic()
                    if now - last_churn > 0.2 and now < stop_at:
                        _churn_control(conn, control, own, errors)
                        last_churn = now
                    if now >= stop_at:
                        # Drained: nothing new for 5 s after the producers stopped.
                        if len(seen) != before or idle_since is None:
                            idle_since = now
                        elif now - idle_since > 5:
                            results.put(
                                {"role": "consumer", "name": name, "seen": seen,
                                 "errors": dict(errors)}
                            )  # fmt: skip
                            return
        except Exception as exc:  # what would stop a Celery worker
            errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
        finally:
            conn.release()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="atomic")
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=3)
    args = parser.parse_args(argv)

    (ROOT / "var").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"broker-stress-{args.transport}-", dir=ROOT / "var"))
    for sub in ("out", "processed", "control"):
        (folder / sub).mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop_at = time.monotonic() + args.seconds
    procs = [
        ctx.Process(target=producer, args=(i, args.transport, folder, stop_at, results))
        for i in range(args.producers)
    ] + [
        ctx.Process(target=consumer, args=(i, args.transport, folder, stop_at, results))
        for i in range(args.consumers)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=args.seconds + 300) for _ in procs]
    for proc in procs:
        proc.join(10)

    sent = {r["name"]: r["sent"] for r in reports if r["role"] == "producer"}
    received = collections.Counter(s for r in reports if r["role"] == "consumer" for s in r["seen"])
    expected = {f"{name}:{seq}" for name, n in sent.items() for seq in range(n)}
    errors: collections.Counter = collections.Counter()
    for r in reports:
        errors.update(r["errors"])
    leftover = len([f for f in os.listdir(folder / "out") if f.endswith(".msg")])
    corrupt = len([f for f in os.listdir(folder / "processed") if f.endswith(".corrupt")])
    print(
        json.dumps(
            {
                "transport": args.transport,
                "seconds": args.seconds,
                "producers": args.producers,
                "consumers": args.consumers,
                "sent": sum(sent.values()),
                "received": sum(received.values()),
                "duplicates": sum(n - 1 for n in received.values() if n > 1),
                "lost": len(expected - set(received)),
                "left_in_queue": leftover,
                "quarantined_corrupt": corrupt,
                "errors": dict(errors.most_common()),
            },
            indent=2,
        )
    )
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
