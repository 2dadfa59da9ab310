"""What the emulated terminals committed: the ground truth tests compare the back-office against.

An entry is written at the moment a terminal commits (before it answers, so a connection dropped
after the commit still leaves the entry), never for refused or failed requests.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


class EntryKind(enum.StrEnum):
    RESERVATION = "reservation"
    CAPTURE = "capture"
    RELEASE = "release"
    CLOSING = "closing"


@dataclass(slots=True)
class LedgerEntry:
    terminal_id: str
    kind: EntryKind
    request_id: str | None  # None for entries injected through the control interface
    amount_minor: int
    currency: str
    stan: str = ""
    approval_code: str = ""
    brand: str = ""
    token: str = ""
    # Captures and releases: STAN of the reservation they settle.
    reservation_stan: str = ""
    period: int = 0
    injected: bool = False
    # Closings: per-brand totals of the period they close.
    totals: list[dict[str, object]] = field(default_factory=list)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seq: int = 0

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data


class Ledger:
    """Append-only, shared by all terminals of one emulator process (single event loop)."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        # Captures look their reservation up by (terminal, STAN): index it so a long demo run
        # does not turn every capture into a scan of the whole ledger.
        self._reservations: dict[tuple[str, str], LedgerEntry] = {}
        self._settlements: dict[tuple[str, str], list[LedgerEntry]] = {}

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        entry.seq = len(self._entries) + 1
        self._entries.append(entry)
        if entry.kind == EntryKind.RESERVATION:
            self._reservations[(entry.terminal_id, entry.stan)] = entry
        elif entry.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) and entry.reservation_stan:
            key = (entry.terminal_id, entry.reservation_stan)
            self._settlements.setdefault(key, []).append(entry)
        return entry

    def entries(
        self, terminal_id: str | None = None, kind: EntryKind | None = None
    ) -> list[LedgerEntry]:
        return [
            entry
            for entry in self._entries
            if (terminal_id is None or entry.terminal_id == terminal_id)
            and (kind is None or entry.kind == kind)
        ]

    def find_reservation(self, terminal_id: str, stan: str) -> LedgerEntry | None:
        # STANs wrap after 999999; the latest reservation with the STAN is the one meant.
        return self._reservations.get((terminal_id, stan))

    def settlements_of(self, terminal_id: str, stan: str) -> list[LedgerEntry]:
        """Captures and releases that settle the reservation with this STAN."""
        return list(self._settlements.get((terminal_id, stan), ()))

    def period_totals(self, terminal_id: str, period: int) -> list[dict[str, object]]:
        """Per-brand count and sum of the captures of one period.

        Only captures count: a reservation moves no money and a release undoes one, so captures
        are what the acquirer settles and what a closing must report.
        """
        totals: dict[tuple[str, str], dict[str, object]] = {}
        for entry in self._entries:
            if (
                entry.terminal_id != terminal_id
                or entry.kind != EntryKind.CAPTURE
                or entry.period != period
            ):
                continue
            row = totals.setdefault(
                (entry.brand, entry.currency),
                {"brand": entry.brand, "currency": entry.currency, "count": 0, "amount_minor": 0},
            )
            row["count"] = int(row["count"]) + 1  # type: ignore[call-overload]
            row["amount_minor"] = int(row["amount_minor"]) + entry.amount_minor  # type: ignore[call-overload]
        return [totals[key] for key in sorted(totals)]
