"""Faults injected on demand, per terminal.

A fault applies to the next ``count`` matching requests, or (with ``rate``) to each matching
request with that probability until cleared; ``operation`` narrows it to one request type so a
test can, say, drop the capture after commit while the authorisation goes through.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from terminals.opi.profile import DEFAULT_REQUEST_TYPES


class FaultKind(enum.StrEnum):
    # Close the connection after reading the request; nothing is committed.
    DROP_BEFORE_COMMIT = "drop_before_commit"
    # Commit (ledger, last message, receipts) and close without answering.
    DROP_AFTER_COMMIT = "drop_after_commit"
    # Read the request and never answer, keeping the socket open until the POS gives up.
    # Nothing is committed unless the fault says commit=true.
    NO_ANSWER = "no_answer"
    # Wait ``delay`` seconds before answering.
    SLOW = "slow"
    # Process the request, commit, then answer a frame of non-XML bytes and close.
    GARBAGE = "garbage"
    # Answer Busy without doing anything.
    BUSY = "busy"
    # Close the connection as soon as it is accepted (before reading, unless an operation filter
    # makes it wait for the request type).
    OFFLINE = "offline"
    # Answer normally, but with the card's full PAN in CardPAN and on the receipts instead of
    # the masked one: the firmware or configuration error a back-office must not store.
    FULL_PAN = "full_pan"


#: Friendly operation names accepted beside the OPI RequestType.
OPERATION_ALIASES = {
    "authorise": "CardPreAuthorisation",
    "authorize": "CardPreAuthorisation",
    "validate": "CardValidation",
    "token": "CardValidation",
    "capture": "CardFinancialAdvice",
    "release": "PreAuthReversal",
    "repeat": "RepeatLastMessage",
    "reprint": "TicketReprint",
    "mifare": "CardSwipe",
    "abort": "AbortRequest",
    "brands": "GetCardCircuits",
    "status": "Diagnosis",
    "closing": "ReconciliationWithClosure",
    "reconciliation": "Reconciliation",
    "login": "Login",
    "logoff": "Logoff",
}

# The library's operation names ("capture", "card_token", ...) work too.
OPERATION_ALIASES.update({str(op): name for op, name in DEFAULT_REQUEST_TYPES.items()})

KNOWN_OPERATIONS = frozenset(OPERATION_ALIASES.values())


class FaultError(ValueError):
    """A fault description that cannot be applied; the message is meant for the caller."""


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    count: int | None = 1  # None: unlimited (with a rate)
    rate: float | None = None
    delay: float = 0.0
    operation: str | None = None
    commit: bool | None = None

    @classmethod
    def from_dict(cls, data: object) -> Fault:
        if not isinstance(data, dict):
            raise FaultError("body must be a JSON object")
        unknown = set(data) - {"kind", "count", "rate", "delay", "operation", "commit"}
        if unknown:
            raise FaultError(f"unknown fields: {', '.join(sorted(unknown))}")
        try:
            kind = FaultKind(data.get("kind"))
        except ValueError:
            raise FaultError(
                f"kind must be one of {', '.join(k.value for k in FaultKind)}"
            ) from None
        rate = data.get("rate")
        if rate is not None:
            if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
                raise FaultError("rate must be a number between 0 and 1")
            rate = float(rate)
        count = data.get("count", None if rate is not None else 1)
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise FaultError("count must be a positive integer")
        delay = data.get("delay", 0.0)
        if delay is None:
            delay = 0.0
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise FaultError("delay must be a non-negative number of seconds")
        if kind is FaultKind.SLOW and not delay:
            raise FaultError("a slow fault needs a delay in seconds")
        operation = data.get("operation")
        if operation is not None:
            if not isinstance(operation, str):
                raise FaultError("operation must be a string")
            operation = OPERATION_ALIASES.get(operation, operation)
            if operation not in KNOWN_OPERATIONS:
                raise FaultError(f"unknown operation {operation!r}")
        commit = data.get("commit")
        if commit is not None and not isinstance(commit, bool):
            raise FaultError("commit must be true or false")
        return cls(kind, count, rate, float(delay), operation, commit)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "count": self.count,
            "rate": self.rate,
            "delay": self.delay,
            "operation": self.operation,
            "commit": self.commit,
        }

    def matches(self, operation: str | None) -> bool:
        return self.operation is None or self.operation == operation

    @property
    def commits(self) -> bool:
        if self.commit is not None:
            return self.commit
        return self.kind in (FaultKind.DROP_AFTER_COMMIT, FaultKind.GARBAGE, FaultKind.SLOW)


class FaultSet:
    def __init__(self, rng: random.Random) -> None:
        self._faults: list[Fault] = []
        self._rng = rng

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def to_list(self) -> list[dict[str, object]]:
        return [fault.to_dict() for fault in self._faults]

    def take(self, operation: str | None, *, connection_level: bool = False) -> Fault | None:
        """Consume and return the first fault that fires for this request, if any.

        ``connection_level`` is the check made when a connection is accepted, before any request
        is read: only unfiltered offline faults can fire there.
        """
        for fault in self._faults:
            if connection_level:
                if fault.kind is not FaultKind.OFFLINE or fault.operation is not None:
                    continue
            elif not fault.matches(operation) or (
                fault.kind is FaultKind.OFFLINE and fault.operation is None
            ):
                continue
            if fault.rate is not None and self._rng.random() >= fault.rate:
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            return fault
        return None
