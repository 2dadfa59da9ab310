"""Terminals that are not our CCV-like emulator (issue 13): the emulator's "minimal" dialect.

Each test fails without its fix: a refusal read as unknown blocks the terminal; missing
totals reconciled as zero; a refused Diagnosis counted as no answer; long STANs truncated;
PrivateData free text dropped.
"""

import pytest
from django.urls import reverse

from evpay.models import ExceptionRecord
from sessions import journal, services
from sessions.models import CloseReason, Operation, Outcome, SessionState, TxState
from terminals import services as terminal_services
from terminals.models import PeriodClosing, TerminalStatus
from tests.charging.conftest import CHARGER, authorised_session, make_world, settling_session

pytestmark = pytest.mark.django_db(transaction=True)
S = SessionState


@pytest.fixture
def minimal(emulator, emu_terminal):
    emulator.set_dialect(emu_terminal["terminal_id"], "minimal")
    return emu_terminal


def _configuration_exceptions():
    return ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.CONFIGURATION)


def test_long_stans_and_terminal_text_are_kept_and_the_capture_addresses_the_reservation(
    emulator, minimal, client_for, operator
):
    _, connectors, _ = make_world(minimal)
    session = settling_session(emulator, minimal, connectors[0])
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert (session.state, session.close_reason) == (S.CLOSED, CloseReason.CAPTURED)
    auth = session.authorisation()
    reservation = next(
        r
        for r in emulator.ledger(minimal["terminal_id"], kind="reservation")
        if r["stan"] == auth.stan
    )
    assert len(auth.stan) == 20 and reservation["stan"] == auth.stan
    assert "minimal-fw" in auth.terminal_text
    captures = [
        r
        for r in emulator.ledger(minimal["terminal_id"], kind="capture")
        if r["reservation_stan"] == auth.stan
    ]
    assert len(captures) == 1 and session.captured_amount_minor == captures[0]["amount_minor"]
    page = client_for(operator).get(reverse("sessions:detail", args=[session.public_id]))
    assert f"Terminal: {auth.terminal_text}" in page.content.decode()


def test_an_unsupported_authorisation_is_a_refusal_that_leaves_the_terminal_free(
    emulator, emu_terminal
):
    tid = emu_terminal["terminal_id"]
    # The emulator is shared by the run: earlier tests may have left reservations on this one.
    reserved_before = emulator.ledger(tid, kind="reservation")
    emulator.set_dialect(tid, "minimal", unsupported=["CardPreAuthorisation"])
    terminal, connectors, _ = make_world(emu_terminal)
    first = authorised_session(emulator, emu_terminal, connectors[0])
    auth = first.transactions.get(operation=Operation.AUTHORISE)
    assert (auth.state, auth.outcome) == (TxState.COMPLETED, Outcome.FAILED)
    assert (first.state, first.close_reason) == (S.CLOSED, CloseReason.FAILED)
    assert not journal.unsettled_money_requests(terminal).exists(), "nothing to recover"
    second = authorised_session(emulator, emu_terminal, connectors[1])
    assert second.state == S.CLOSED, "the next start is answered, not 'needs recovery'"
    assert emulator.ledger(tid, kind="reservation") == reserved_before
    exception = _configuration_exceptions().get()  # once, not per session
    assert exception.title == (
        f"Terminal {tid} refused CardPreAuthorisation as unsupported: check the request-type "
        "names in its profile"
    )
    assert exception.severity == ExceptionRecord.Severity.CRITICAL


def test_a_closing_without_totals_is_unverified_not_reconciled_as_zero(emulator, minimal):
    terminal, connectors, _ = make_world(minimal)
    session = settling_session(emulator, minimal, connectors[0])
    services.settle_session(session.pk, CHARGER)
    closing = terminal_services.run_closing(terminal, CHARGER)
    assert closing.state == PeriodClosing.State.UNVERIFIED
    assert closing.get_state_display() == "Unverified: the terminal reported no totals"
    assert not closing.totals.exists()
    assert not ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.CLOSING_MISMATCH).exists()
    # The terminal did close its period: the next closing counts from this one.
    again = terminal_services.run_closing(terminal, CHARGER, rerun_of=closing.pk, reason="test")
    assert again.period_start == closing.period_end


def test_a_terminal_that_refuses_diagnosis_is_reachable_not_offline(emulator, minimal, settings):
    terminal, connectors, _ = make_world(minimal)
    authorised_session(emulator, minimal, connectors[0])  # an open session: offline would raise
    for _ in range(settings.EVPAY_OFFLINE_AFTER_FAILURES + 1):
        terminal_services.poll_status(terminal, CHARGER)
        terminal.refresh_from_db()
    assert terminal.status == TerminalStatus.REACHABLE and terminal.consecutive_failures == 0
    assert terminal.is_online and terminal.last_seen_at is not None
    assert not ExceptionRecord.objects.filter(kind=ExceptionRecord.Kind.TERMINAL_OFFLINE).exists()
    change = terminal.status_changes.get(to_status=TerminalStatus.REACHABLE)
    assert "answered Failure to Diagnosis" in change.detail and "status_request" in change.detail


def test_a_terminal_without_diagnosis_is_polled_with_login_by_its_profile(emulator, minimal):
    terminal, _, _ = make_world(minimal)
    terminal.profile = {**terminal.profile, "status_request": "login"}
    terminal.save(update_fields=["profile"])
    assert terminal_services.poll_status(terminal, CHARGER) == TerminalStatus.REACHABLE
    assert not _configuration_exceptions().exists()
    terminal.profile = {**terminal.profile, "status_request": "none"}
    terminal.save(update_fields=["profile"])
    emulator.set_offline(minimal["terminal_id"], True)
    assert terminal_services.poll_status(terminal, CHARGER) == TerminalStatus.REACHABLE
    emulator.set_offline(minimal["terminal_id"], False)


def test_a_terminal_that_stops_answering_is_still_offline(emulator, minimal, settings):
    terminal, _, _ = make_world(minimal)
    emulator.set_offline(minimal["terminal_id"], True)
    for _ in range(settings.EVPAY_OFFLINE_AFTER_FAILURES):
        terminal_services.poll_status(terminal, CHARGER)
        terminal.refresh_from_db()
    assert terminal.status == TerminalStatus.OFFLINE
