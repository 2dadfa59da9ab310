"""Channel 1 under hostile load: every limit of DeviceChannelServer, over real sockets.

The timeouts are small so the tests are quick; they assert what happened (closed, refused,
counted), waiting with a deadline rather than sleeping for a fixed time.
"""

import logging
import socket
import struct
import threading
import time
from contextlib import ExitStack, suppress

import pytest

from terminals.opi import messages as m
from terminals.opi.device_channel import DeviceChannelServer, RecordingDeviceHandler, ThrottledLog
from terminals.opi.framing import MAX_FRAME_BYTES, FrameDecoder, encode_frame, read_frame

from . import samples
from .test_device_channel import _device_request, _exchange

LOGGER = "terminals.opi.device_channel"


def _wait_until(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _connect_from(source: str, port: int) -> socket.socket:
    """A client socket from ``source`` (any 127/8 address works on Linux loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket, within: float = 5.0) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def _header(size: int) -> bytes:
    return struct.pack(">I", size)


def _receipt_exchange(sock: socket.socket, request: m.DeviceRequest | bytes) -> m.DeviceResponse:
    sock.settimeout(5)
    sock.sendall(encode_frame(request if isinstance(request, bytes) else m.encode(request)))
    return m.parse(read_frame(sock))


def test_a_header_then_silence_is_closed_after_the_frame_timeout():
    with DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler(), frame_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            # Within the size cap (1 MiB would be refused at once as oversized).
            sock.sendall(_header(40_000) + b"<Device")
            assert _closed_by_server(sock)
        assert _wait_until(lambda: server.stats["frame_timeouts"] == 1)
        assert server.stats["idle_closed"] == 0


def test_a_frame_trickled_byte_by_byte_is_closed_although_it_is_never_idle():
    with DeviceChannelServer(
        "127.0.0.1", 0, RecordingDeviceHandler(), idle_timeout=0.4, frame_timeout=1.0
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_header(500))
            closed = False
            deadline = time.monotonic() + 5
            while not closed and time.monotonic() < deadline:
                try:
                    sock.sendall(b"x")
                except OSError:
                    closed = True
                    break
                closed = not _still_open(sock)
                time.sleep(0.05)
            assert closed
        assert _wait_until(lambda: server.stats["frame_timeouts"] == 1)
        assert server.stats["idle_closed"] == 0


def test_an_idle_connection_is_closed_after_the_idle_timeout():
    with DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler(), idle_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            response = _receipt_exchange(sock, _device_request("1", ("Printer", ["hello"])))
            assert response.overall_result == "Success"
            assert _closed_by_server(sock)
        assert _wait_until(lambda: server.stats["idle_closed"] == 1)
        assert _wait_until(lambda: server.active_connections == 0)


def test_the_defaults_keep_an_idle_terminal_connected_for_minutes():
    server = DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler())
    assert server.limits.idle_timeout >= 300
    assert server.limits.frame_timeout <= 30
    assert (server.max_connections, server.max_connections_per_host) == (64, 8)


def test_the_ninth_connection_from_one_host_is_closed_at_once():
    with (
        DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler()) as server,
        ExitStack() as stack,
    ):
        first = [stack.enter_context(_connect_from("127.0.0.2", server.port)) for _ in range(8)]
        assert _wait_until(lambda: server.stats["accepted"] == 8)
        ninth = stack.enter_context(_connect_from("127.0.0.2", server.port))
        assert _closed_by_server(ninth, within=2)
        assert server.stats["refused_host_cap"] == 1
        assert all(_still_open(sock) for sock in first)
        # Another address is not affected by that one's cap.
        other = stack.enter_context(_connect_from("127.0.0.3", server.port))
        assert _wait_until(lambda: server.stats["accepted"] == 9)
        assert _still_open(other)


def test_300_connections_get_at_most_64_threads_and_the_65th_is_closed_at_once():
    before = threading.active_count()
    with (
        DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler()) as server,
        ExitStack() as stack,
    ):
        # 30 addresses, 10 each: the per-host cap (8) lets 240 through, the total cap 64.
        socks = [
            stack.enter_context(_connect_from(f"127.0.2.{1 + i % 30}", server.port))
            for i in range(300)
        ]
        assert _wait_until(
            lambda: (
                server.stats["accepted"]
                + server.stats["refused_total_cap"]
                + server.stats["refused_host_cap"]
                == 300
            )
        )
        threads = threading.active_count()
        assert server.stats["accepted"] == 64
        assert server.stats["refused_total_cap"] + server.stats["refused_host_cap"] == 236
        assert server.active_connections == 64
        assert threads <= before + 64 + 2
        open_ones = [sock for sock in socks if _still_open(sock)]
        assert len(open_ones) == 64


def test_an_oversized_frame_is_refused_from_its_header_without_reading_the_body():
    with DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler()) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            # Only the header is sent: the server must not wait for the announced 1 MiB.
            sock.sendall(_header(64 * 1024 + 1))
            assert _closed_by_server(sock, within=2)
        assert _wait_until(lambda: server.stats["oversized"] == 1)
    # Channel 0 keeps its own, larger limit.
    assert FrameDecoder().max_size == MAX_FRAME_BYTES == 1024 * 1024


def test_a_receipt_near_the_frame_limit_is_still_answered():
    handler = RecordingDeviceHandler()
    lines = [f"{i:03d} " + "x" * 250 for i in range(200)]  # about 55 kB of XML
    with DeviceChannelServer("127.0.0.1", 0, handler) as server:
        response = _exchange(server.port, _device_request("7", ("PrinterReceipt", lines)))
    assert response.overall_result == "Success"
    assert handler.receipt_lines() == lines


def test_too_many_lines_are_answered_failure_and_never_reach_the_handler(caplog):
    handler = RecordingDeviceHandler()
    seen = []
    with DeviceChannelServer(
        "127.0.0.1", 0, handler, on_request=seen.append, max_lines=200
    ) as server:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            long = _exchange(
                server.port,
                _device_request(
                    "8", ("PrinterReceipt", ["a"] * 150), ("CustomerDisplay", ["b"] * 51)
                ),
            )
        assert (long.request_id, long.overall_result) == ("8", "Failure")
        assert [o.result for o in long.outputs] == ["Failure", "Failure"]
        assert handler.requests == [] and seen == []
        assert server.stats["too_many_lines"] == 1
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "201 lines" in warnings[0].getMessage()
        fits = _exchange(server.port, _device_request("9", ("PrinterReceipt", ["a"] * 200)))
    assert fits.overall_result == "Success"
    assert [r.request_id for r in handler.requests] == ["9"]


def test_a_connection_sending_too_many_messages_is_closed():
    with DeviceChannelServer(
        "127.0.0.1", 0, RecordingDeviceHandler(), max_messages_per_minute=5
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            for i in range(5):
                response = _receipt_exchange(sock, _device_request(str(i), ("Printer", ["x"])))
                assert response.overall_result == "Success"
            sock.sendall(encode_frame(m.encode(_device_request("6", ("Printer", ["x"])))))
            assert _closed_by_server(sock)
        assert _wait_until(lambda: server.stats["rate_limited"] == 1)


def test_a_flood_of_junk_frames_writes_at_most_n_warnings_and_one_summary(caplog):
    handler = RecordingDeviceHandler()
    junk = encode_frame(b"<<<not xml") * 5000
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        DeviceChannelServer(
            "127.0.0.1", 0, handler, max_messages_per_minute=None, log_per_minute=5
        ) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(junk)
        # Answered after all the junk: by then every junk frame has been handled.
        response = _receipt_exchange(sock, _device_request("1", ("Printer", ["ok"])))
    # Leaving the server stopped it, which wrote the summary still pending.
    assert response.overall_result == "Success"
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) <= 5 + 1
    assert warnings[-1] == "channel 1: suppressed 4995 similar messages from 127.0.0.1"


def test_the_log_budget_is_per_host_and_summarised_when_the_minute_is_over():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("tests.throttled")
    log.propagate = False
    log.addHandler(Collect())
    now = [0.0]
    throttled = ThrottledLog(log, per_minute=2, clock=lambda: now[0])
    for i in range(10):
        throttled.warning("10.0.0.1", "junk %d", i)
    throttled.warning("10.0.0.2", "other host")
    now[0] = 61.0
    throttled.warning("10.0.0.1", "junk again")
    assert records == [
        "junk 0",
        "junk 1",
        "other host",
        "channel 1: suppressed 8 similar messages from 10.0.0.1",
        "junk again",
    ]


@pytest.mark.timeout(60)
def test_a_real_terminal_is_served_while_another_address_floods_the_server():
    handler = RecordingDeviceHandler()
    with (
        DeviceChannelServer("127.0.0.1", 0, handler, frame_timeout=30) as server,
        ExitStack() as stack,
    ):
        attackers = []
        for i in range(300):
            try:
                sock = stack.enter_context(_connect_from("127.0.0.2", server.port))
            except OSError:
                continue
            attackers.append(sock)
            with suppress(OSError):  # slowloris and partial frames from those let in
                sock.sendall(_header(60_000) + b"<DeviceRequest" if i % 2 else _header(9))
        assert _wait_until(lambda: server.stats["refused_host_cap"] >= 250)
        with _connect_from("127.0.0.1", server.port) as terminal:
            response = _receipt_exchange(terminal, samples.RECEIPT_DEVICE_REQUEST)
        assert response.overall_result == "Success"
        assert handler.receipt_lines() == ["CARDHOLDER COPY", "AMOUNT EUR 50.00", ""]
        assert server.stats["accepted"] == 8 + 1
