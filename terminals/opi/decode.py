"""Turn one captured O.P.I. message (bare XML or a length-prefixed frame) into plain JSON data.

Used by ``manage.py opi_decode`` and handy in a debugger; no Django here.
"""

from __future__ import annotations

from typing import Any

from .errors import MalformedMessage
from .framing import HEADER_BYTES, FrameDecoder, has_length_prefix
from .messages import (
    CardServiceResponse,
    DeviceRequest,
    Message,
    ServiceResponse,
    format_amount,
    parse,
)


def strip_frame(data: bytes) -> tuple[bytes, bool]:
    """Return the XML payload and whether it was framed.

    A capture is taken as framed when its first four bytes announce exactly the bytes that
    follow. Something that starts like a frame header but does not match (a cut capture, or
    several frames) is decoded frame by frame so the error says what is wrong.
    """
    stripped = data.lstrip()
    if stripped.startswith((b"<", b"\xef\xbb\xbf<", b"\xff\xfe", b"\xfe\xff")):
        return data, False
    if has_length_prefix(data):
        return data[HEADER_BYTES:], True
    if len(data) >= HEADER_BYTES and data[0] == 0:
        decoder = FrameDecoder()
        frames = decoder.feed(data)
        decoder.eof()  # raises TruncatedFrame for a cut capture
        raise MalformedMessage(f"capture holds {len(frames)} frames; decode one message at a time")
    return data, False


def _with_decimal_amounts(value: Any) -> Any:
    """Add the wire form beside every amount, so readers need not divide by 100."""
    if isinstance(value, dict):
        converted = {key: _with_decimal_amounts(item) for key, item in value.items()}
        if set(value) == {"minor", "currency"}:
            converted["value"] = format_amount(value["minor"], value["currency"])
        return converted
    if isinstance(value, list):
        return [_with_decimal_amounts(item) for item in value]
    return value


def describe(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data: envelope first, then every extracted field."""
    result: dict[str, Any] = {
        "root": message.root,
        "request_type": message.request_type,
        "request_id": message.request_id,
        "workstation_id": message.workstation_id,
        "overall_result": getattr(message, "overall_result", None),
    }
    if isinstance(message, DeviceRequest):
        result["receipt_lines"] = [
            {"target": output.target, "row": line.row, "text": line.text}
            for output in message.outputs
            for line in output.lines
        ]
    if isinstance(message, CardServiceResponse):
        result["card_token"] = message.card_token
        result["par"] = message.par
        result["card_uid"] = message.card_uid
        if message.original_header is not None:
            result["original_request_id"] = message.original_header.request_id
    private_data = getattr(message, "private_data", None)
    if private_data is not None:
        result["error_code"] = private_data.error_code
        result["error_text"] = private_data.error_text
        result["private_text"] = private_data.text
    if isinstance(message, ServiceResponse):
        # None: the answer has no Reconciliation element (no totals reported); []: it
        # reported an empty period. Both are shown, because they mean different things.
        result["totals"] = None
        if message.reconciliation is not None:
            result["totals"] = [
                {
                    "card_circuit": total.card_circuit,
                    "number_payments": total.number_payments,
                    "amount": total.amount.to_decimal_string(),
                    "amount_minor": total.amount.minor,
                    "currency": total.amount.currency,
                    "payment_type": total.payment_type,
                }
                for total in message.reconciliation
            ]
        if message.card_circuits is not None:
            result["brands"] = [
                {"code": c.code, "display_name": c.display_name} for c in message.card_circuits
            ]
        result["terminal_state"] = message.terminal_state
    result["fields"] = _with_decimal_amounts(message.to_dict())
    return result


def decode_capture(data: bytes) -> dict[str, Any]:
    """Parse a capture; raises a ProtocolError subclass for malformed or unsafe input."""
    payload, framed = strip_frame(data)
    message = parse(payload)
    described = describe(message)
    described["framed"] = framed
    return described
