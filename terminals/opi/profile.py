"""Per-terminal settings: addresses, channel-1 arrangement, timeouts and request-type names.

CCV does not publish every OPI-NL request-type name (see shared/docs/opi-nl.md, items marked
[chosen]), so the name sent for each product operation lives here, per terminal, and code
never spells a request type itself: it asks ``profile.request_type_for(Operation.AUTHORISE)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from .errors import ProfileError


class Operation(StrEnum):
    AUTHORISE = "authorise"
    CARD_TOKEN = "card_token"
    CAPTURE = "capture"
    RELEASE = "release"
    REPEAT_LAST_MESSAGE = "repeat_last_message"
    TICKET_REPRINT = "ticket_reprint"
    MIFARE_UID = "mifare_uid"
    ABORT = "abort"
    BRANDS = "brands"
    STATUS = "status"
    RECONCILIATION = "reconciliation"
    CLOSING = "closing"
    LOGIN = "login"
    LOGOFF = "logoff"


CARD_SERVICE_REQUEST = "CardServiceRequest"
SERVICE_REQUEST = "ServiceRequest"

# Which root element carries each operation: fixed by the protocol, not configurable.
OPERATION_ROOTS: dict[Operation, str] = {
    Operation.AUTHORISE: CARD_SERVICE_REQUEST,
    Operation.CARD_TOKEN: CARD_SERVICE_REQUEST,
    Operation.CAPTURE: CARD_SERVICE_REQUEST,
    Operation.RELEASE: CARD_SERVICE_REQUEST,
    Operation.REPEAT_LAST_MESSAGE: CARD_SERVICE_REQUEST,
    Operation.TICKET_REPRINT: CARD_SERVICE_REQUEST,
    Operation.MIFARE_UID: CARD_SERVICE_REQUEST,
    Operation.ABORT: CARD_SERVICE_REQUEST,
    Operation.BRANDS: SERVICE_REQUEST,
    Operation.STATUS: SERVICE_REQUEST,
    Operation.RECONCILIATION: SERVICE_REQUEST,
    Operation.CLOSING: SERVICE_REQUEST,
    Operation.LOGIN: SERVICE_REQUEST,
    Operation.LOGOFF: SERVICE_REQUEST,
}

# Operations that move money: their outcome is unknown once written (outcome-unknown rule).
FINANCIAL_OPERATIONS = frozenset({Operation.AUTHORISE, Operation.CAPTURE, Operation.RELEASE})

DEFAULT_REQUEST_TYPES: dict[str, str] = {
    Operation.AUTHORISE: "CardPreAuthorisation",
    Operation.CARD_TOKEN: "CardValidation",
    Operation.CAPTURE: "CardFinancialAdvice",
    Operation.RELEASE: "PreAuthReversal",
    Operation.REPEAT_LAST_MESSAGE: "RepeatLastMessage",
    Operation.TICKET_REPRINT: "TicketReprint",
    Operation.MIFARE_UID: "CardSwipe",
    Operation.ABORT: "AbortRequest",
    Operation.BRANDS: "GetCardCircuits",
    Operation.STATUS: "Diagnosis",
    Operation.RECONCILIATION: "Reconciliation",
    Operation.CLOSING: "ReconciliationWithClosure",
    Operation.LOGIN: "Login",
    Operation.LOGOFF: "Logoff",
}

# Card-present operations wait for a person (tap, PIN, online approval): minutes.
# Service operations are answered by the terminal itself: seconds.
DEFAULT_TIMEOUTS: dict[str, float] = {
    Operation.AUTHORISE: 180.0,
    Operation.CARD_TOKEN: 180.0,
    Operation.MIFARE_UID: 180.0,
    Operation.CAPTURE: 60.0,
    Operation.RELEASE: 60.0,
    Operation.REPEAT_LAST_MESSAGE: 30.0,
    Operation.TICKET_REPRINT: 30.0,
    Operation.CLOSING: 120.0,
    Operation.RECONCILIATION: 60.0,
    Operation.ABORT: 10.0,
    Operation.BRANDS: 10.0,
    Operation.STATUS: 10.0,
    Operation.LOGIN: 10.0,
    Operation.LOGOFF: 10.0,
}

CHANNEL1_LISTENERS = ("pos", "terminal")
ENCODINGS = ("UTF-8", "ISO-8859-1")
# How a terminal is polled for presence: "status" sends Diagnosis, "login" sends Login (for
# terminals without Diagnosis: a Login answer proves the terminal is there), "none" never polls.
STATUS_REQUESTS = ("status", "login", "none")
MAX_CHANNEL1_GRACE_SECONDS = 30.0


def _normalise_encoding(value: str) -> str:
    folded = value.strip().upper().replace("_", "-")
    if folded in ("UTF8", "UTF-8"):
        return "UTF-8"
    if folded in ("ISO-8859-1", "ISO8859-1", "LATIN-1", "LATIN1"):
        return "ISO-8859-1"
    raise ProfileError("encoding", f"must be one of {', '.join(ENCODINGS)}, not {value!r}")


@dataclass
class TerminalProfile:
    """Plain data describing how to talk to one terminal. Validated on construction."""

    host: str
    port0: int = 4100
    port1: int = 4102
    # Who listens on channel 1. "pos" (we listen, the terminal connects) is the usual O.P.I.
    # arrangement and our default [chosen]; some installations invert it.
    channel1_listener: str = "pos"
    pos_listen_host: str = "0.0.0.0"
    pos_listen_port: int = 4102
    workstation_id: str = "POS1"
    application_sender: str = "evpay"
    pop_id: str = "001"
    language_code: str = "en"
    encoding: str = "UTF-8"
    connect_timeout: float = 5.0
    timeouts: dict[str, float] = field(default_factory=dict)
    request_types: dict[str, str] = field(default_factory=dict)
    # When we listen on channel 1 per request: how long the listener stays open after the
    # channel-0 response. Terminals send a last display update (or a receipt) just after the
    # final response; closing at once would reset that connection.
    channel1_grace_seconds: float = 1.0
    status_request: str = "status"
    # Where this terminal's channel-1 messages may come from when we listen: addresses or
    # networks ("10.1.2.0/28"). Empty: the terminal's own host only. Anything else is refused,
    # so a peer that can reach the port cannot write on another terminal's receipts.
    channel1_sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ProfileError("host", "must be a non-empty host name or address")
        for name in ("port0", "port1", "pos_listen_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ProfileError(name, f"must be an integer port 0-65535, not {value!r}")
        if self.channel1_listener not in CHANNEL1_LISTENERS:
            raise ProfileError(
                "channel1_listener", f"must be 'pos' or 'terminal', not {self.channel1_listener!r}"
            )
        for name in ("pos_listen_host", "workstation_id", "application_sender", "pop_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ProfileError(name, "must be a non-empty string")
        if not isinstance(self.language_code, str):
            raise ProfileError("language_code", "must be a string")
        if not isinstance(self.encoding, str):
            raise ProfileError("encoding", "must be a string")
        self.encoding = _normalise_encoding(self.encoding)
        self.connect_timeout = _positive_number("connect_timeout", self.connect_timeout)
        grace = self.channel1_grace_seconds
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not 0 <= grace <= MAX_CHANNEL1_GRACE_SECONDS
        ):
            raise ProfileError(
                "channel1_grace_seconds",
                f"must be a number of seconds from 0 to {MAX_CHANNEL1_GRACE_SECONDS:g}, "
                f"not {grace!r}",
            )
        self.channel1_grace_seconds = float(grace)
        if not isinstance(self.channel1_sources, list) or not all(
            isinstance(source, str) and source.strip() for source in self.channel1_sources
        ):
            raise ProfileError(
                "channel1_sources", "must be a list of addresses, networks or host names"
            )
        for source in self.channel1_sources:
            if any(c.isspace() or ord(c) < 32 for c in source):
                raise ProfileError("channel1_sources", f"{source!r} is not an address")
        if self.status_request not in STATUS_REQUESTS:
            raise ProfileError(
                "status_request",
                f"must be one of {', '.join(map(repr, STATUS_REQUESTS))}, "
                f"not {self.status_request!r}",
            )

        if not isinstance(self.timeouts, dict):
            raise ProfileError("timeouts", "must be a mapping of operation to seconds")
        merged_timeouts = dict(DEFAULT_TIMEOUTS)
        for key, value in self.timeouts.items():
            operation = _operation("timeouts", key)
            merged_timeouts[operation] = _positive_number(f"timeouts.{key}", value)
        self.timeouts = {str(k): v for k, v in merged_timeouts.items()}

        if not isinstance(self.request_types, dict):
            raise ProfileError("request_types", "must be a mapping of operation to name")
        merged_types = dict(DEFAULT_REQUEST_TYPES)
        for key, value in self.request_types.items():
            operation = _operation("request_types", key)
            if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                raise ProfileError(
                    f"request_types.{key}", "must be a non-empty name without spaces"
                )
            merged_types[operation] = value
        names = list(merged_types.values())
        for operation, name in merged_types.items():
            if names.count(name) > 1:
                raise ProfileError(
                    f"request_types.{operation}", f"{name!r} is used for more than one operation"
                )
        self.request_types = {str(k): v for k, v in merged_types.items()}

    def request_type_for(self, operation: Operation | str) -> str:
        return self.request_types[Operation(operation)]

    def operation_for(self, request_type: str) -> Operation | None:
        """Reverse lookup, for a peer (the emulator) deciding what a request asks for."""
        for operation, name in self.request_types.items():
            if name == request_type:
                return Operation(operation)
        return None

    def timeout_for(self, operation: Operation | str) -> float:
        return self.timeouts[Operation(operation)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TerminalProfile:
        """Build from JSON-like data; missing keys take defaults, unknown keys are refused."""
        if not isinstance(data, dict):
            raise ProfileError("profile", "must be a mapping")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ProfileError(str(key), "is not a terminal profile setting")
        if "host" not in data:
            raise ProfileError("host", "is required")
        return cls(**{key: _copy(value) for key, value in data.items()})


def _operation(setting: str, key: object) -> Operation:
    try:
        return Operation(key)
    except ValueError:
        raise ProfileError(f"{setting}.{key}", "is not a known operation") from None


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(name, f"must be a number of seconds, not {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ProfileError(name, f"must be a positive number of seconds, not {value!r}")
    return number


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
