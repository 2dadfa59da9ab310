"""The emulator's journal: a restarted emulator process still knows the reservations it holds."""

from terminals.emulator.harness import EmulatorProcess
from terminals.emulator.ledger import EntryKind, Ledger, LedgerEntry

from .pos import Channel1Responder, card_request, exchange
from .test_authorise import authorise
from .test_settlement import capture


def _reservation(stan: str) -> LedgerEntry:
    return LedgerEntry("52000001", EntryKind.RESERVATION, "7", 5000, "EUR", stan=stan)


def test_a_ledger_with_a_journal_reads_back_what_it_recorded(tmp_path):
    journal = tmp_path / "journal.jsonl"
    ledger = Ledger(journal)
    ledger.record(_reservation("000041"))
    ledger.record(_reservation("000042"))
    restored = Ledger(journal)
    assert [e.to_dict() for e in restored.entries()] == [e.to_dict() for e in ledger.entries()]
    assert restored.find_reservation("52000001", "000042").seq == 2
    restored.record(_reservation("000043"))
    assert len(Ledger(journal).entries()) == 3


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    journal = tmp_path / "journal.jsonl"
    Ledger(journal).record(_reservation("000001"))
    with open(journal, "a") as fh:
        fh.write('{"terminal_id": "52000001", "kind": "reserv')
    assert len(Ledger(journal).entries()) == 1


def test_a_restarted_emulator_captures_a_reservation_made_before_repeats_and_goes_on(
    tmp_path,
):
    journal = tmp_path / "journal.jsonl"
    args = ["--journal", str(journal)]
    with EmulatorProcess(count=1, extra_args=args) as emu:
        terminal = emu.terminals[0]
        tid = terminal["terminal_id"]
        responder = Channel1Responder().connect(terminal)
        try:
            emu.present_card(tid, "visa_ok")
            authorisation = authorise(terminal, 2500)
        finally:
            responder.close()
        assert authorisation.overall_result == "Success"
        before = emu.ledger(tid)
    # A new process on the same journal: as a terminal after a reboot.
    with EmulatorProcess(count=1, extra_args=args) as emu:
        terminal = emu.terminals[0]
        assert emu.ledger(tid) == before
        responder = Channel1Responder().connect(terminal)
        try:
            captured = capture(terminal, authorisation, 1800)
        finally:
            responder.close()
        assert captured.overall_result == "Success"
    # And RepeatLastMessage after another restart still names the capture.
    with EmulatorProcess(count=1, extra_args=args) as emu:
        repeated = exchange(emu.terminals[0], card_request("RepeatLastMessage"))
        assert repeated.overall_result == "Success"
        assert repeated.original_header.request_id == captured.request_id
    with EmulatorProcess(count=1, extra_args=args) as emu:
        terminal = emu.terminals[0]
        responder = Channel1Responder().connect(terminal)
        try:
            emu.present_card(tid, "visa_ok")
            second = authorise(terminal, 1000)
        finally:
            responder.close()
        # The counter carried on: a STAN after the restart never repeats one from before.
        stans = [authorisation.terminal.stan, captured.terminal.stan, second.terminal.stan]
        assert [int(stan) for stan in stans] == sorted({int(stan) for stan in stans})
        kinds = [entry["kind"] for entry in emu.ledger(tid)]
        assert kinds == ["reservation", "capture", "reservation"]
