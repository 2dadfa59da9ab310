import socket
import threading

from terminals.opi import messages as m
from terminals.opi.device_channel import DeviceChannelServer, RecordingDeviceHandler
from terminals.opi.framing import encode_frame, read_frame

from . import samples


def _device_request(request_id: str, *outputs: tuple[str, list[str]]) -> m.DeviceRequest:
    return m.DeviceRequest(
        "Output",
        request_id,
        "POS1",
        sequence_id=request_id,
        terminal_id="52000001",
        outputs=[
            m.Output(t, [m.TextLine(text, i) for i, text in enumerate(lines, 1)])
            for t, lines in outputs
        ],
    )


def _exchange(port: int, request: m.DeviceRequest | bytes) -> m.DeviceResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        payload = request if isinstance(request, bytes) else m.encode(request)
        sock.sendall(encode_frame(payload))
        return m.parse(read_frame(sock))


def test_server_records_receipts_and_displays_in_order_and_answers_success():
    handler = RecordingDeviceHandler()
    with DeviceChannelServer("127.0.0.1", 0, handler) as server:
        assert server.port
        response = _exchange(server.port, samples.RECEIPT_DEVICE_REQUEST)
    assert isinstance(response, m.DeviceResponse)
    assert (response.request_id, response.request_type, response.overall_result) == (
        "4711",
        "Output",
        "Success",
    )
    assert [(o.target, o.result) for o in response.outputs] == [
        ("PrinterReceipt", "Success"),
        ("CustomerDisplay", "Success"),
    ]
    assert handler.receipt_lines() == ["CARDHOLDER COPY", "AMOUNT EUR 50.00", ""]
    assert handler.display_texts() == ["APPROVED"]
    assert [m_.kind for m_ in handler.messages] == ["receipt", "display"]


def test_delivery_box_is_decided_by_the_callback():
    seen = []

    def refuse(request):
        seen.append(request.request_id)
        return False

    handler = RecordingDeviceHandler(on_delivery_box=refuse)
    with DeviceChannelServer("127.0.0.1", 0, handler) as server:
        refused = _exchange(
            server.port, _device_request("5", ("DeliveryBox", ["DELIVER", "EUR 50.00"]))
        )
        handler.on_delivery_box = lambda request: True
        accepted = _exchange(server.port, _device_request("6", ("DeliveryBox", ["DELIVER"])))
    assert seen == ["5"]
    assert refused.overall_result == "Failure"
    assert refused.outputs == [m.OutputResult("DeliveryBox", "Failure")]
    assert accepted.overall_result == "Success"


def test_a_crashing_delivery_callback_refuses_delivery_instead_of_hanging_the_terminal():
    def broken(request):
        raise RuntimeError("database down")

    with DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler(broken)) as server:
        response = _exchange(server.port, _device_request("5", ("DeliveryBox", ["DELIVER"])))
    assert response.overall_result == "Failure"


def test_a_handler_that_cannot_store_answers_failure_for_that_target():
    class Full(RecordingDeviceHandler):
        def store_output(self, request, output):
            return output.target != "Printer"

    with DeviceChannelServer("127.0.0.1", 0, Full()) as server:
        response = _exchange(
            server.port, _device_request("1", ("Printer", ["x"]), ("CustomerDisplay", ["y"]))
        )
    assert response.overall_result == "Failure"
    assert response.outputs == [
        m.OutputResult("Printer", "Failure"),
        m.OutputResult("CustomerDisplay", "Success"),
    ]


def test_server_serves_many_terminals_at_once_and_survives_garbage():
    handler = RecordingDeviceHandler()
    with DeviceChannelServer("127.0.0.1", 0, handler) as server:
        # A connection sending garbage must not disturb the others.
        junk = socket.create_connection(("127.0.0.1", server.port))
        junk.sendall(encode_frame(b"<<<not xml") + b"\xff\xff\xff\xff")
        errors = []

        def terminal(n: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    for i in range(5):
                        request = _device_request(
                            f"{n}{i}", ("Printer", [f"terminal {n} line {i}"])
                        )
                        sock.sendall(encode_frame(m.encode(request)))
                        assert m.parse(read_frame(sock)).request_id == f"{n}{i}"
            except Exception as exc:  # reported below: assertion errors in threads are lost
                errors.append(exc)

        threads = [threading.Thread(target=terminal, args=(n,)) for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        junk.close()
    assert errors == []
    assert len(handler.receipt_lines()) == 40
    for n in range(1, 9):
        mine = [line for line in handler.receipt_lines() if line.startswith(f"terminal {n} ")]
        assert mine == [f"terminal {n} line {i}" for i in range(5)]


def test_stop_releases_the_port():
    server = DeviceChannelServer("127.0.0.1", 0, RecordingDeviceHandler()).start()
    port = server.port
    server.stop()
    again = DeviceChannelServer("127.0.0.1", port, RecordingDeviceHandler()).start()
    again.stop()


def test_recording_handler_keeps_only_the_newest_messages():
    handler = RecordingDeviceHandler(keep=3)
    for i in range(5):
        handler.handle(_device_request(str(i), ("Printer", [f"line {i}"])))
    assert handler.receipt_lines() == ["line 2", "line 3", "line 4"]
    assert [r.request_id for r in handler.requests] == ["2", "3", "4"]


def test_the_handler_learns_the_terminals_address_and_odd_request_ids_are_echoed():
    handler = RecordingDeviceHandler()
    # Another implementation: no TerminalID, its own RequestIDs derived from ours.
    documents = [
        b'<DeviceRequest RequestType="Output" RequestID="%s" WorkstationID="POS1">'
        b'<Output OutDeviceTarget="CustomerDisplay"><TextLine>%s</TextLine></Output>'
        b"</DeviceRequest>" % (request_id, request_id)
        for request_id in (b"123-d0", b"123.1")
    ]
    with DeviceChannelServer("127.0.0.1", 0, handler) as server:
        answers = [_exchange(server.port, document) for document in documents]
    assert [(a.request_id, a.overall_result) for a in answers] == [
        ("123-d0", "Success"),
        ("123.1", "Success"),
    ]
    assert [(r.request_id, r.terminal_id, r.peer_host) for r in handler.requests] == [
        ("123-d0", None, "127.0.0.1"),
        ("123.1", None, "127.0.0.1"),
    ]
    assert handler.display_texts() == ["123-d0", "123.1"]
