"""What the emulated terminals committed: the ground truth tests compare the back-office against.

An entry is written at the moment a terminal commits (before it answers, so a connection dropped
after the commit still leaves the entry), never for refused or failed requests.

With a journal file (``--journal``, what `make run` passes) every entry is also appended to it as
one JSON line, and a restarted emulator reads it back: its terminals still know the reservations
they hold, as a real terminal does after a reboot, so the captures of sessions that were
charging when the emulator died still succeed.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)


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

    def __init__(self, journal: str | Path | None = None) -> None:
        self._entries: list[LedgerEntry] = []
        # Captures look their reservation up by (terminal, STAN): index it so a long demo run
        # does not turn every capture into a scan of the whole ledger.
        self._reservations: dict[tuple[str, str], LedgerEntry] = {}
        self._settlements: dict[tuple[str, str], list[LedgerEntry]] = {}
        # Per terminal, the last committed request (model.committed_to_dict), for the journal.
        self.last_committed: dict[str, dict[str, object]] = {}
        self._journal = None
        if journal is not None:
            path = Path(journal)
            if path.exists():
                self._replay(path)
            self._journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 - process lifetime

    def _replay(self, path: Path) -> None:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
                if "last_committed" in data:
                    self.last_committed[data["terminal_id"]] = data["last_committed"]
                    continue
                data["kind"] = EntryKind(data["kind"])
                entry = LedgerEntry(**data)
            except (ValueError, TypeError, KeyError):
                log.warning("journal %s: skipping an unreadable line", path)  # cut by a crash
                continue
            self._index(entry)
        log.info("journal %s: %d entries restored", path, len(self._entries))

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        entry.seq = len(self._entries) + 1
        self._index(entry)
        self._write(entry.to_dict())
        return entry

    def remember_committed(self, terminal_id: str, committed: dict[str, object]) -> None:
        """Journal a terminal's last committed request (what RepeatLastMessage reports)."""
        self.last_committed[terminal_id] = committed
        self._write({"terminal_id": terminal_id, "last_committed": committed})

    def _write(self, data: dict[str, object]) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(data) + "\n")
            self._journal.flush()

    def _index(self, entry: LedgerEntry) -> None:
        self._entries.append(entry)
        if entry.kind == EntryKind.RESERVATION:
            self._reservations[(entry.terminal_id, entry.stan)] = entry
        elif entry.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) and entry.reservation_stan:
            key = (entry.terminal_id, entry.reservation_stan)
            self._settlements.setdefault(key, []).append(entry)

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
