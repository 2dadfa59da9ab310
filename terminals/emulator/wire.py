"""Conversion between terminals.opi.messages and the emulator's Request/Reply.

All XML goes through the protocol library: this module only decides which message fields the
terminal fills for each operation. The one exception is the minimal dialect's free text inside
PrivateData, which the library has no field for and which is spliced into its output here.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from terminals.opi import messages as m
from terminals.opi.errors import MalformedMessage, MissingField, ProtocolError
from terminals.opi.profile import OPERATION_ROOTS, Operation, TerminalProfile

from .model import Committed, Reply, Request

__all__ = [
    "Operation",
    "encode_device_request",
    "encode_error",
    "encode_reply",
    "encode_unsupported",
    "parse_device_response",
    "parse_request",
]

# [chosen] Reconciliation/TotalAmount/@PaymentType: the emulator only settles card debits.
PAYMENT_TYPE = "Debit"


def parse_request(data: bytes, profile: TerminalProfile) -> Request:
    message = m.parse(data)
    if not isinstance(message, m.CardServiceRequest | m.ServiceRequest):
        raise MalformedMessage(f"a terminal does not accept {message.root} on channel 0")
    operation = profile.operation_for(message.request_type)
    # A request type under the wrong root is as unknown as a misspelt one.
    if operation is not None and OPERATION_ROOTS[operation] != message.root:
        operation = None
    request = Request(
        root=message.root,
        request_type=message.request_type,
        request_id=message.request_id,
        workstation_id=message.workstation_id,
        operation=operation,
        message=message,
    )
    if isinstance(message, m.CardServiceRequest):
        if message.amount is not None:
            request.amount_minor = message.amount.minor
            request.currency = message.amount.currency
        original = message.original_transaction
        if original is not None:
            request.original_terminal_id = original.terminal_id
            request.original_stan = original.stan
            request.original_approval_code = original.approval_code or ""
    return request


def encode_error(data: bytes, exc: ProtocolError, terminal_id: str) -> bytes | None:
    """Answer a request the library refused, if enough of it is readable to address an answer.

    Not well-formed XML, or no usable RequestID, leaves nothing to echo: the caller closes.
    """
    try:
        root = m.parse_tree(m.decode_text(data))
    except ProtocolError:
        return None
    name = root.tag.rsplit("}", 1)[-1]
    request_id = root.get("RequestID") or ""
    if name not in ("CardServiceRequest", "ServiceRequest") or not m.is_valid_request_id(
        request_id
    ):
        return None
    result = (
        m.OverallResult.MISSING_MANDATORY_DATA
        if isinstance(exc, MissingField)
        else m.OverallResult.FORMAT_ERROR
    )
    response_class = m.CardServiceResponse if name == "CardServiceRequest" else m.ServiceResponse
    response = response_class(
        request_type=root.get("RequestType") or "Unknown",
        request_id=request_id,
        overall_result=result,
        workstation_id=root.get("WorkstationID"),
        terminal=m.TerminalInfo(terminal_id=terminal_id),
        private_data=m.PrivateData(error_text=str(exc)[:200]),
    )
    return m.encode(response)


def encode_reply(
    request: Request,
    reply: Reply,
    terminal_id: str,
    repeated: Committed | None = None,
    *,
    totals: bool = True,
    private_text: str | None = None,
) -> bytes:
    """``totals=False`` leaves the Reconciliation element out; ``private_text`` goes straight
    into a CardServiceResponse's PrivateData (both: the minimal dialect, terminals/emulator/
    dialects.py). The defaults are the CCV-like answer."""
    private = None
    if reply.error_code or reply.error_text:
        private = m.PrivateData(
            error_code=reply.error_code or None, error_text=reply.error_text or None
        )
    if request.root == m.ServiceRequest.root:
        return m.encode(
            m.ServiceResponse(
                request_type=request.request_type,
                request_id=request.request_id,
                overall_result=reply.result,
                workstation_id=request.workstation_id,
                terminal=m.TerminalInfo(terminal_id=terminal_id, state=reply.state or None),
                card_circuits=(
                    [m.CardCircuit(code, name) for code, name in reply.brands]
                    if request.operation is Operation.BRANDS
                    else None
                ),
                reconciliation=(
                    [
                        m.BrandTotal(
                            card_circuit=str(row["brand"]),
                            amount=m.Amount(int(row["amount_minor"]), str(row["currency"])),  # type: ignore[call-overload]
                            number_payments=int(row["count"]),  # type: ignore[call-overload]
                            payment_type=PAYMENT_TYPE,
                        )
                        for row in reply.totals
                    ]
                    if totals and request.operation in (Operation.RECONCILIATION, Operation.CLOSING)
                    else None
                ),
                private_data=private,
            )
        )

    tender = None
    card_value = None
    card = reply.card
    if card is not None or reply.amount_minor is not None or reply.approval_code:
        tender = m.Tender(
            amount=(
                m.Amount(reply.amount_minor, reply.currency)
                if reply.amount_minor is not None
                else None
            ),
            authorisation=m.Authorisation(
                approval_code=reply.approval_code or None,
                card_circuit=card.brand if card is not None and card.brand else None,
                card_pan=(
                    (card.pan if reply.full_pan else card.masked_pan)
                    if card is not None and card.pan
                    else None
                ),
                timestamp=reply.timestamp or None,
                action_code=reply.action_code or ("000" if reply.result == "Success" else None),
            ),
        )
    tokens = []
    if reply.token:
        tokens.append(m.Token(m.TOKEN_TYPE_CARD_TOKEN, reply.token))
    if reply.par:
        tokens.append(m.Token(m.TOKEN_TYPE_PAR, reply.par))
    if tokens or reply.uid:
        card_value = m.CardValue(tokens=tokens, card_uid=reply.uid or None)
    original_header = None
    if repeated is not None:
        original_header = m.OriginalHeader(
            request_id=repeated.request.request_id,
            request_type=repeated.request.request_type,
            workstation_id=repeated.request.workstation_id,
            overall_result=repeated.reply.result,
        )
    document = m.encode(
        m.CardServiceResponse(
            request_type=request.request_type,
            request_id=request.request_id,
            overall_result=reply.result,
            workstation_id=request.workstation_id,
            terminal=m.TerminalInfo(terminal_id=terminal_id, stan=reply.stan or None),
            tender=tender,
            card_value=card_value,
            original_header=original_header,
            private_data=private,
        )
    )
    if private_text is not None:
        document = _with_private_text(document, m.CardServiceResponse.root, private_text)
    return document


def encode_unsupported(request: Request, terminal_id: str, text: str) -> bytes:
    """A firmware's answer to a request type it does not implement: a root ServiceResponse
    Failure echoing the request's envelope, whatever the request's root was."""
    return m.encode(
        m.ServiceResponse(
            request_type=request.request_type,
            request_id=request.request_id,
            overall_result=m.OverallResult.FAILURE,
            workstation_id=request.workstation_id,
            terminal=m.TerminalInfo(terminal_id=terminal_id),
            private_data=m.PrivateData(error_text=text),
        )
    )


# PrivateData's start tag, with any attributes, or its empty-element form.
_PRIVATE_DATA_TAG = re.compile(rb"<PrivateData(?:\s[^>]*?)?(?P<empty>/?)>")


def _with_private_text(document: bytes, root: str, text: str) -> bytes:
    """Put ``text`` as the text content of the document's PrivateData, creating it if needed.

    The library models PrivateData as ErrorCode/ErrorText children only, so mixed content is
    spliced into its output. Matching tags in the bytes is safe: every value the encoder writes
    has ``<`` escaped, so ``<PrivateData`` and the root's closing tag occur only as markup.
    """
    content = escape(text).encode("utf-8")
    match = _PRIVATE_DATA_TAG.search(document)
    if match is not None:
        if match.group("empty"):
            inserted = match.group(0)[:-2] + b">" + content + b"</PrivateData>"
        else:
            inserted = match.group(0) + content
        return document[: match.start()] + inserted + document[match.end() :]
    closing = f"</{root}>".encode()
    head, found, tail = document.rpartition(closing)
    if not found:
        raise ValueError(f"no {root} closing tag to put PrivateData before")
    return head + b"<PrivateData>" + content + b"</PrivateData>" + closing + tail


def encode_device_request(
    *,
    terminal_id: str | None,
    workstation_id: str,
    request_id: str,
    sequence_id: int,
    outputs: list[tuple[str, list[str]]],
) -> bytes:
    return m.encode(
        m.DeviceRequest(
            request_type="Output",
            request_id=request_id,
            workstation_id=workstation_id or None,
            sequence_id=str(sequence_id),
            terminal_id=terminal_id,
            outputs=[
                m.Output(
                    target=target,
                    lines=[
                        m.TextLine(text=text, row=row, column=1, erase=row == 1 or None)
                        for row, text in enumerate(lines, start=1)
                    ],
                )
                for target, lines in outputs
            ],
        )
    )


def parse_device_response(data: bytes) -> tuple[str, str]:
    message = m.parse(data)
    if not isinstance(message, m.DeviceResponse):
        raise MalformedMessage(f"expected a DeviceResponse on channel 1, got {message.root}")
    return message.request_id, message.overall_result
