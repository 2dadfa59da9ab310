"""Terminal dialects: how far one emulated terminal strays from the CCV-like default.

Real fleets run terminals whose firmware fills the same O.P.I. messages differently. A dialect
collects those differences so the back-office can be tested against each of them without a
second emulator. ``ccv`` is the emulator as it always was, byte for byte; every quirk below is
switched off for it. ``minimal`` is a sparse third-party firmware:

- unsupported request types get a root ``ServiceResponse OverallResult="Failure"`` (even for a
  CardServiceRequest), instead of a response of the request's own kind;
- Reconciliation / ReconciliationWithClosure answer Success without any totals element;
- channel-1 DeviceRequests carry no TerminalID, and RequestIDs derived from the channel-0
  RequestID (``<ours>-d0``, ``<ours>-d1``, ...);
- STANs are 20 alphanumeric characters, not 6 digits;
- card-service responses carry free text directly inside PrivateData;
- a last display update ("THANK YOU") follows the channel-0 response over channel 1.

This module only describes a dialect; terminal.py and wire.py act on it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CCV = "ccv"
MINIMAL = "minimal"
DIALECTS = (CCV, MINIMAL)

#: What ``minimal`` refuses unless told otherwise: nothing the charging journey needs, so the
#: back-office must get through a session without status, brand list or Mifare reads.
MINIMAL_UNSUPPORTED = ("Diagnosis", "GetCardCircuits", "CardSwipe")

FIRMWARE = "minimal-fw 1.2"

# A request-type name as it appears in the RequestType attribute; anything else is a typo in a
# test or a command line, better refused than silently never matched.
_REQUEST_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

# STAN counter width in the minimal dialect: 8 hex digits never wrap in a test or a soak, so a
# STAN is unique per terminal for good, unlike CCV's six digits.
_COUNTER_HEX = 8
_STAN_LENGTH = 20


class DialectError(ValueError):
    pass


def parse_request_types(value: str | Iterable[str]) -> frozenset[str]:
    """``"Diagnosis,CardSwipe"`` or a list of names -> a set; an empty string means none."""
    names = value.split(",") if isinstance(value, str) else list(value)
    result = set()
    for raw in names:
        if not isinstance(raw, str):
            raise DialectError(f"request types must be strings, not {raw!r}")
        name = raw.strip()
        if not name:
            continue
        if not _REQUEST_TYPE_NAME.fullmatch(name):
            raise DialectError(f"{name!r} is not a request-type name")
        result.add(name)
    return frozenset(result)


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str = CCV
    # Request types answered with ServiceResponse Failure. Honoured in either dialect, so a
    # CCV-like terminal can be made to refuse one operation too.
    unsupported: frozenset[str] = frozenset()

    @classmethod
    def make(cls, name: str = CCV, unsupported: str | Iterable[str] | None = None) -> Dialect:
        """A validated dialect; ``unsupported=None`` takes the dialect's own default set."""
        if name not in DIALECTS:
            raise DialectError(f"dialect must be one of {', '.join(DIALECTS)}, not {name!r}")
        if unsupported is None:
            unsupported = MINIMAL_UNSUPPORTED if name == MINIMAL else ()
        return cls(name, parse_request_types(unsupported))

    @property
    def minimal(self) -> bool:
        return self.name == MINIMAL

    def refuses(self, request_type: str, known: bool) -> bool:
        """Whether a request gets the ServiceResponse Failure answer.

        A minimal firmware knows nothing beyond what it supports, so a RequestType the profile
        does not know either (``known`` False) is refused the same way there.
        """
        return request_type in self.unsupported or (self.minimal and not known)

    @property
    def reconciliation_totals(self) -> bool:
        return not self.minimal

    @property
    def device_terminal_id(self) -> bool:
        return not self.minimal

    @property
    def device_ids_from_request(self) -> bool:
        return self.minimal

    @property
    def closing_display(self) -> bool:
        return self.minimal

    def next_stan_counter(self, counter: int) -> int:
        # CCV's six digits wrap; the minimal dialect's counter has room enough never to.
        return counter + 1 if self.minimal else counter % 999999 + 1

    def format_stan(self, terminal_id: str, counter: int) -> str:
        if not self.minimal:
            return f"{counter:06d}"
        # "A" + 11 hex characters that look random but are fixed by terminal and counter (so a
        # seeded run repeats its STANs) + the counter itself, which makes them unique.
        digest = hashlib.sha256(f"{terminal_id}:{counter}".encode()).hexdigest().upper()
        prefix_length = _STAN_LENGTH - 1 - _COUNTER_HEX
        return f"A{digest[:prefix_length]}{counter:0{_COUNTER_HEX}X}"

    def private_text(self, result: str) -> str | None:
        """Free text a minimal firmware puts straight into PrivateData, or None (CCV-like)."""
        if not self.minimal:
            return None
        summary = "approved offline-capable" if result == "Success" else result.lower()
        return f"{FIRMWARE}: {summary}"

    def unsupported_text(self, request_type: str) -> str:
        text = f"RequestType {request_type} not supported"
        return f"{FIRMWARE}: {text}" if self.minimal else text

    def to_dict(self) -> dict[str, Any]:
        return {"dialect": self.name, "unsupported": sorted(self.unsupported)}
