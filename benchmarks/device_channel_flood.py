"""What a connection flood costs the channel-1 server: threads, memory, refusals.

    .venv/bin/python benchmarks/device_channel_flood.py [--connections 1000] [--partial 300]

Starts a DeviceChannelServer with its default limits, then from one process opens
``--connections`` connections spread over ``--addresses`` loopback addresses (127.0.3.x;
Linux routes all of 127/8 to loopback) and sends a partial frame (header plus the start of a 60 kB
body, then silence) on the first ``--partial`` of them. Prints the server's counters, the
thread count and the RSS growth (VmRSS from /proc/self/status), then whether a
well-behaved terminal on 127.0.0.1 still gets its DeviceResponse: it does while the flood
comes from fewer addresses than max_connections / max_connections_per_host (64 / 8), and
is refused once that many addresses fill the total cap.

The issue #18 probe, before the limits: 1,000 connections gave 1,006 threads and 300
partial 1 MiB frames grew RSS from 143 to 450 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from terminals.opi import messages as m  # noqa: E402
from terminals.opi.device_channel import DeviceChannelServer, RecordingDeviceHandler  # noqa: E402
from terminals.opi.errors import ConnectionClosed  # noqa: E402
from terminals.opi.framing import encode_frame, read_frame  # noqa: E402


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connect_from(source: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--partial", type=int, default=300)
    parser.add_argument("--addresses", type=int, default=1)
    args = parser.parse_args()

    handler = RecordingDeviceHandler()
    threads_before = threading.active_count()
    rss_before = rss_kib()
    server = DeviceChannelServer("127.0.0.1", 0, handler).start()
    socks: list[socket.socket] = []
    peak_threads = threading.active_count()
    try:
        started = time.monotonic()
        for i in range(args.connections):
            sock = connect_from(f"127.0.3.{1 + i % args.addresses}", server.port)
            if sock is None:
                continue
            socks.append(sock)
            if i < args.partial:
                with contextlib.suppress(OSError):
                    sock.sendall(struct.pack(">I", 60_000) + b"<DeviceRequest " + b"x" * 30_000)
            peak_threads = max(peak_threads, threading.active_count())
        deadline = time.monotonic() + 10
        stats = server.stats
        while time.monotonic() < deadline:
            decided = stats["accepted"] + stats["refused_total_cap"] + stats["refused_host_cap"]
            if decided >= len(socks):
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # let the admitted connections read their partial frames
        peak_threads = max(peak_threads, threading.active_count())
        rss_after = rss_kib()

        request = m.DeviceRequest(
            "Output",
            "1",
            "POS1",
            outputs=[m.Output("PrinterReceipt", [m.TextLine("AMOUNT EUR 50.00", 1)])],
        )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as terminal:
                terminal.sendall(encode_frame(m.encode(request)))
                result = m.parse(read_frame(terminal)).overall_result
        except (OSError, ConnectionClosed) as exc:
            result = f"refused ({exc})"

        print(
            f"attempted connections  {args.connections} from {args.addresses} address(es), "
            f"{args.partial} with a partial frame"
        )
        print(f"connected (client)     {len(socks)} in {elapsed:.2f} s")
        for key, value in stats.items():
            print(f"  {key:<20} {value}")
        print(f"threads                {threads_before} before, peak {peak_threads}")
        print(
            f"RSS                    {rss_before // 1024} MB before, {rss_after // 1024} MB "
            f"after (+{(rss_after - rss_before) / 1024:.1f} MB, client sockets included)"
        )
        print(f"real terminal answer   {result}")
        return 0
    finally:
        for sock in socks:
            sock.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
