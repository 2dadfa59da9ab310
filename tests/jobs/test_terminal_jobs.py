"""Status polling, brands, closings with reconciliation, expiry guard, PrintLastTicket."""

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from evpay.audit import Actor
from evpay.models import AuditEvent, ExceptionRecord, JobRun
from sessions import services
from sessions.models import ChargingSession, CloseReason, Outcome, SessionState, TerminalTransaction
from terminals import gateway
from terminals import services as terminal_services
from terminals.emulator.harness import EmulatorProcess
from terminals.models import PeriodClosing, Terminal, TerminalStatus
from terminals.opi.profile import Operation
from terminals.tasks import refresh_brands_task, run_closing_task
from tests.charging.conftest import CHARGER, authorised_session, make_world, settling_session

pytestmark = pytest.mark.django_db(transaction=True)
JOB = Actor.job("test")
S = SessionState


def _captured_session(emulator, info, connectors, card="visa_ok", energy_wh=5000, index=0):
    session = settling_session(emulator, info, connectors[index], card, energy_wh)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED and session.close_reason == CloseReason.CAPTURED
    return session


def test_status_polling_marks_a_terminal_offline_and_back_online(emulator, emu_terminal, settings):
    terminal, connectors, _ = make_world(emu_terminal)
    authorised_session(emulator, emu_terminal, connectors[0])
    assert terminal_services.poll_status(terminal, JOB) in (
        TerminalStatus.IDLE,
        TerminalStatus.READY,
    )
    emulator.set_offline(emu_terminal["terminal_id"], True)
    for _ in range(settings.EVPAY_OFFLINE_AFTER_FAILURES):
        terminal.refresh_from_db()
        terminal_services.poll_status(terminal, JOB)
    terminal.refresh_from_db()
    assert terminal.status == TerminalStatus.OFFLINE
    offline = ExceptionRecord.objects.get(kind="terminal_offline")
    assert "1 open session" in offline.title
    emulator.set_offline(emu_terminal["terminal_id"], False)
    terminal_services.poll_status(terminal, JOB)
    terminal.refresh_from_db()
    assert terminal.is_online and terminal.consecutive_failures == 0
    history = list(terminal.status_changes.values_list("to_status", flat=True))
    assert history[:2] == [terminal.status, TerminalStatus.OFFLINE]
    offline.refresh_from_db()
    assert offline.resolved_at is not None
    resolved = AuditEvent.objects.get(action="exception.resolved", subject_id=str(offline.pk))
    assert (resolved.from_state, resolved.to_state) == ("open", "resolved")
    assert resolved.actor_label == JOB.label and "answered again" in resolved.reason


def test_brands_are_refreshed_with_the_time_of_the_refresh(emulator, emu_terminal):
    terminal, _, _ = make_world(emu_terminal)
    refresh_brands_task.run(terminal.pk, "test")
    terminal.refresh_from_db()
    codes = set(terminal.brands.values_list("code", flat=True))
    assert {"VISA", "ECMC", "MAES"} <= codes
    assert terminal.brands_refreshed_at is not None
    assert JobRun.objects.get(kind="brands").counts["brands"] == len(codes)


def test_period_closing_totals_match_the_emulator(emulator, emu_terminal):
    terminal, connectors, _ = make_world(emu_terminal)
    # Start a clean period: the shared emulator terminal may carry earlier tests' captures.
    run_closing_task.run(terminal.pk, "test")
    clean = PeriodClosing.objects.get(terminal=terminal)
    _captured_session(emulator, emu_terminal, connectors, "visa_ok", 5000, 0)
    _captured_session(emulator, emu_terminal, connectors, "mc_ok", 10_000, 1)
    # The same business date again: an explicit re-run.
    run_closing_task.run(terminal.pk, "test", clean.pk, "the test's own period")
    closing = PeriodClosing.objects.filter(terminal=terminal).order_by("-id").first()
    assert closing.state == PeriodClosing.State.MATCHED, [
        t.explanation for t in closing.totals.all()
    ]
    totals = {
        t.brand: (t.terminal_count, t.terminal_amount_minor, t.our_count, t.our_amount_minor)
        for t in closing.totals.all()
    }
    assert totals == {"VISA": (1, 250, 1, 250), "ECMC": (1, 450, 1, 450)}
    assert not ExceptionRecord.objects.filter(
        kind="closing_mismatch", subject_id=str(closing.pk)
    ).exists()


def test_a_capture_we_never_recorded_makes_a_mismatch_exception_naming_it(emulator, emu_terminal):
    terminal, connectors, _ = make_world(emu_terminal)
    run_closing_task.run(terminal.pk, "test")
    clean = PeriodClosing.objects.get(terminal=terminal)
    _captured_session(emulator, emu_terminal, connectors)
    emulator.inject_capture(emu_terminal["terminal_id"], 1234, card="visa_ok")
    closing = terminal_services.run_closing(terminal, JOB, rerun_of=clean.pk, reason="test")
    assert closing.state == PeriodClosing.State.MISMATCH
    visa = closing.totals.get(brand="VISA")
    assert (visa.count_difference, visa.amount_difference_minor) == (1, 1234)
    exc = ExceptionRecord.objects.get(kind="closing_mismatch", subject_id=str(closing.pk))
    assert "12.34" in exc.what_happened and "VISA" in exc.what_happened


DONE = (PeriodClosing.State.MATCHED, PeriodClosing.State.MISMATCH)


def _closings_on_terminal(emulator, info) -> int:
    return len(emulator.ledger(info["terminal_id"], kind="closing"))


def test_one_closing_per_terminal_and_day_and_running_it_again_is_explicit(emulator, emu_terminal):
    # Issue 16: repeated "Run closing now" ran three closings for one business date.
    terminal, _, _ = make_world(emu_terminal)
    before = _closings_on_terminal(emulator, emu_terminal)
    for triggered_by in ("user:otto", "user:otto", "schedule"):
        run_closing_task.run(terminal.pk, triggered_by)
    first = PeriodClosing.objects.get(terminal=terminal)
    assert first.state in DONE  # the shared terminal's period may hold earlier tests' captures
    assert _closings_on_terminal(emulator, emu_terminal) == before + 1
    refused = JobRun.objects.filter(kind="closing", counts__has_key="refused")
    assert refused.count() == 2 and "already done" in refused.first().counts["refused"]

    reason = "terminal totals looked wrong"
    run_closing_task.run(terminal.pk, "user:otto", first.pk, reason)
    # The same re-run delivered twice (a double click on Run again) closes once more only.
    run_closing_task.run(terminal.pk, "user:otto", first.pk, reason)
    assert PeriodClosing.objects.filter(terminal=terminal).count() == 2
    assert _closings_on_terminal(emulator, emu_terminal) == before + 2
    second = PeriodClosing.objects.filter(terminal=terminal).order_by("-id").first()
    assert second.period_start == first.period_end
    row = AuditEvent.objects.get(action="closing.rerun", subject_id=str(second.pk))
    assert row.reason == reason and row.data["triggered_by"] == "user:otto"
    assert row.data["rerun_of"] == str(first.public_id)


def test_a_second_worker_cannot_start_the_closing_another_is_running(
    emulator, emu_terminal, monkeypatch
):
    terminal, _, _ = make_world(emu_terminal)
    before = _closings_on_terminal(emulator, emu_terminal)
    ask, raced = gateway.Lease.ask, []

    def ask_while_another_worker_starts(lease, operation, **call):
        # The other worker comes in while this one's request is at the terminal.
        if operation == Operation.CLOSING and not raced:
            raced.append(True)
            with pytest.raises(terminal_services.ClosingRefused, match="already running"):
                terminal_services.run_closing(terminal, JOB, "second worker")
        return ask(lease, operation, **call)

    monkeypatch.setattr(gateway.Lease, "ask", ask_while_another_worker_starts)
    closing = terminal_services.run_closing(terminal, JOB, "first worker")
    assert raced and closing.state in DONE
    assert PeriodClosing.objects.filter(terminal=terminal).count() == 1
    assert _closings_on_terminal(emulator, emu_terminal) == before + 1


def test_a_busy_terminal_gives_the_claim_up_and_a_dead_workers_claim_expires(
    emulator, emu_terminal
):
    terminal, _, _ = make_world(emu_terminal)
    assert terminal.try_lease("someone else", 60)
    with pytest.raises(gateway.TerminalBusy):
        terminal_services.run_closing(terminal, JOB)
    assert not PeriodClosing.objects.exists(), "nothing was sent: no claim left behind"
    terminal.release_lease("someone else")
    # A claim whose worker died: it stops counting once its request could not be running.
    dead = PeriodClosing.objects.create(
        terminal=terminal,
        business_date=timezone.localdate(timezone=ZoneInfo(terminal.site.time_zone)),
        period_end=timezone.now(),
        triggered_by="lost worker",
    )
    assert terminal_services.closing_of_the_day(terminal) == dead
    PeriodClosing.objects.filter(pk=dead.pk).update(
        created_at=timezone.now() - timedelta(minutes=10)
    )
    closing = terminal_services.run_closing(terminal, JOB)
    dead.refresh_from_db()
    assert dead.state == PeriodClosing.State.FAILED and "not known" in dead.error
    assert closing.state in DONE


def test_expiry_guard_captures_a_running_session_before_the_authorisation_lapses(
    emulator, emu_terminal, settings, enqueued_settle
):
    _, connectors, _ = make_world(emu_terminal)
    session = authorised_session(emulator, emu_terminal, connectors[0])
    services.mark_charging_started(session, CHARGER)
    services.record_meter(session, 7000, CHARGER)
    # Move the clock to just inside the safety margin before the authorisation expires.
    later = session.authorisation_expires_at - timedelta(
        minutes=settings.EVPAY_AUTH_EXPIRY_MARGIN_MINUTES - 1
    )
    assert services.guard_sessions(JOB, now=timezone.now())["expiry_settled"] == 0
    counts = services.guard_sessions(JOB, now=later)
    assert counts["expiry_settled"] == 1
    services.settle_session(session.pk, JOB)
    session.refresh_from_db()
    assert (session.state, session.captured_amount_minor) == (S.CLOSED, 330)


def test_expiry_guard_raises_an_exception_when_settling_cannot_finish(
    emulator, emu_terminal, settings, enqueued_settle
):
    _, connectors, _ = make_world(emu_terminal)
    session = authorised_session(emulator, emu_terminal, connectors[0])
    services.mark_charging_started(session, CHARGER)
    services.mark_unplugged(session, CHARGER, enqueue=False)  # settling; terminal never answers
    later = session.authorisation_expires_at - timedelta(minutes=10)
    services.guard_sessions(JOB, now=later)
    exc = ExceptionRecord.objects.get(kind="auth_expiry")
    assert exc.session_ref == session.public_id


def test_unstarted_reservation_is_released_after_the_start_timeout(
    emulator, emu_terminal, enqueued_settle
):
    _, connectors, _ = make_world(emu_terminal)
    session = authorised_session(emulator, emu_terminal, connectors[0])
    later = session.authorised_at + timedelta(minutes=session.tariff["start_timeout_minutes"] + 1)
    assert services.guard_sessions(JOB, now=later)["released_unstarted"] == 1
    services.settle_session(session.pk, JOB)
    session.refresh_from_db()
    assert session.close_reason == CloseReason.RELEASED


@pytest.fixture(scope="module")
def silent_channel1_emulator():
    # DeliveryBox off so an authorisation can succeed with nobody on channel 1; its receipts
    # then go unacknowledged and the terminal asks for a reprint before the next payment.
    with EmulatorProcess(
        count=1,
        channel1="terminal",
        card_wait=2,
        extra_args=["--no-delivery-box", "--device-timeout", "1"],
    ) as emu:
        yield emu


def test_print_last_ticket_is_reprinted_then_the_capture_goes_through(silent_channel1_emulator):
    emu = silent_channel1_emulator
    info = emu.terminals[0]
    terminal, connectors, _ = make_world(info)
    # Authorise with channel 1 left to an (absent) external service: receipts unacknowledged.
    Terminal.objects.filter(pk=terminal.pk).update(
        profile=terminal.profile | {"channel1_listener": "pos"}
    )
    emu.present_card(info["terminal_id"], "visa_ok")
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.AUTHORISED
    assert emu.state(info["terminal_id"])["reprint_pending"] is True
    # Now we answer channel 1 ourselves: the capture is refused with PrintLastTicket, we reprint,
    # and the retried capture succeeds.
    Terminal.objects.filter(pk=terminal.pk).update(
        profile=terminal.profile | {"channel1_listener": "terminal"}
    )
    services.mark_charging_started(session, CHARGER)
    services.record_meter(session, 5000, CHARGER)
    services.mark_unplugged(session, CHARGER, enqueue=False)
    services.settle_session(session.pk, CHARGER)
    first = TerminalTransaction.objects.filter(session=session, operation="capture").get()
    assert first.outcome == Outcome.PRINT_LAST_TICKET
    assert TerminalTransaction.objects.filter(
        session=session, operation="reprint", outcome=Outcome.SUCCESS
    ).exists()
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == S.CLOSED and session.captured_amount_minor == 250
    assert ChargingSession.objects.count() == 1
