"""The emulator's own view of a request and of its answer, independent of the XML classes.

``wire.py`` converts between these and terminals.opi.messages; the terminal logic only sees
these, which keeps it readable and lets the protocol library evolve without touching it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from terminals.opi.profile import Operation

from .cards import CARDS, Card


@dataclass(slots=True)
class Request:
    root: str  # CardServiceRequest or ServiceRequest
    request_type: str
    request_id: str
    workstation_id: str
    operation: Operation | None  # None: a RequestType this terminal does not know
    amount_minor: int | None = None
    currency: str = "EUR"
    original_terminal_id: str = ""
    original_stan: str = ""
    original_approval_code: str = ""
    message: Any = None  # the parsed library message, for the codec
    # DeviceRequests sent for this request so far (the minimal dialect numbers them "<id>-dN").
    device_requests: int = 0


@dataclass(slots=True)
class Reply:
    result: str
    card: Card | None = None
    token: str = ""
    par: str = ""
    amount_minor: int | None = None
    currency: str = "EUR"
    stan: str = ""
    approval_code: str = ""
    timestamp: str = ""
    action_code: str = ""
    error_code: str = ""
    error_text: str = ""
    uid: str = ""
    state: str = ""  # Diagnosis
    brands: list[tuple[str, str]] = field(default_factory=list)  # GetCardCircuits
    totals: list[dict[str, object]] = field(default_factory=list)  # Reconciliation
    period: int = 0
    full_pan: bool = False  # the FULL_PAN fault: CardPAN carries the whole card number


@dataclass(slots=True)
class Committed:
    """What RepeatLastMessage repeats: the last request the terminal completed, and its answer."""

    request: Request
    reply: Reply


# The journal (ledger.py) keeps the last committed request of each terminal, so RepeatLastMessage
# still answers about it after a restart, as a real terminal does after a reboot.
_REQUEST_KEPT = (
    "root",
    "request_type",
    "request_id",
    "workstation_id",
    "amount_minor",
    "currency",
    "original_terminal_id",
    "original_stan",
    "original_approval_code",
)


def committed_to_dict(committed: Committed) -> dict[str, Any]:
    request = committed.request
    reply = {f.name: getattr(committed.reply, f.name) for f in fields(Reply) if f.name != "card"}
    reply["card"] = committed.reply.card.name if committed.reply.card is not None else None
    return {
        "request": {name: getattr(request, name) for name in _REQUEST_KEPT}
        | {"operation": str(request.operation) if request.operation else None},
        "reply": reply,
    }


def committed_from_dict(data: dict[str, Any]) -> Committed:
    request = dict(data["request"])
    operation = request.pop("operation", None)
    reply = dict(data["reply"])
    card = reply.pop("card", None)
    reply["brands"] = [tuple(pair) for pair in reply.get("brands", [])]
    return Committed(
        Request(operation=Operation(operation) if operation else None, **request),
        Reply(card=CARDS.get(card) if card else None, **reply),
    )
