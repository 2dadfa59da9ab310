"""Background jobs with real Celery worker processes and the emulator process."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.models import JobRun
from sessions.models import ChargingSession, Operation, SessionState, TerminalTransaction, TxState
from sessions.tasks import recovery_sweep_task, settle_session_task
from terminals.models import Terminal
from tests.charging.conftest import make_world, settling_session
from tests.procs import celery_worker, purge_broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _settling_session(emulator, info, connector_index=0, world=None):
    _, connectors, _ = world or make_world(info)
    return settling_session(emulator, info, connectors[connector_index])


def _captures(emulator, info, session):
    stan = session.authorisation().stan
    return [
        r
        for r in emulator.ledger(info["terminal_id"], kind="capture")
        if r["reservation_stan"] == stan
    ]


@pytest.fixture
def clean_broker():
    purge_broker()
    yield
    purge_broker()


def test_worker_killed_mid_capture_is_recovered_by_the_sweep(emulator, emu_terminal, clean_broker):
    session = _settling_session(emulator, emu_terminal)
    # The terminal commits the capture, then takes 8 s to answer: the worker is killed in between.
    emulator.set_fault(
        emu_terminal["terminal_id"], "slow", delay=8, commit=True, operation="capture"
    )
    worker = celery_worker("victim")
    try:
        settle_session_task.delay(session.pk)
        _wait(lambda: _captures(emulator, emu_terminal, session), 30, "the terminal to commit")
        worker.kill()  # SIGKILL: no cleanup, no answer stored
    finally:
        worker.stop()
    tx = TerminalTransaction.objects.get(session=session, operation=Operation.CAPTURE)
    assert tx.state == TxState.SENT, "the row was written before sending and never updated"
    session.refresh_from_db()
    assert session.state == SessionState.SETTLING

    # Time passes: the dead worker's lease on the terminal expires and the row passes its
    # deadline, so the sweep hands it to recovery on a fresh worker.
    past = timezone.now() - timedelta(seconds=1)
    Terminal.objects.filter(pk=tx.terminal_id).update(lease_until=past)
    TerminalTransaction.objects.filter(pk=tx.pk).update(deadline_at=past)

    def swept_and_closed():
        # Beat runs the sweep every minute; here every few seconds. While the terminal is still
        # busy with the dead worker's request, recovery cannot prove anything and waits.
        recovery_sweep_task.delay()
        time.sleep(2)
        return ChargingSession.objects.get(pk=session.pk).state == SessionState.CLOSED

    with celery_worker("rescuer"):
        _wait(swept_and_closed, 60, "recovery to close the session")
    tx.refresh_from_db()
    session.refresh_from_db()
    assert tx.state == TxState.RESOLVED and session.captured_amount_minor == 250
    assert len(_captures(emulator, emu_terminal, session)) == 1
    assert JobRun.objects.filter(kind="recovery_sweep", outcome="ok").exists()


def test_two_workers_racing_for_one_terminal_are_serialised(emulator, emu_terminal, clean_broker):
    world = make_world(emu_terminal)
    first = _settling_session(emulator, emu_terminal, 0, world)
    second = _settling_session(emulator, emu_terminal, 1, world)
    # A slow terminal keeps the first capture open while the second worker tries.
    emulator.set_fault(emu_terminal["terminal_id"], "slow", delay=2, count=1, operation="capture")
    with celery_worker("w1", concurrency=1), celery_worker("w2", concurrency=1):
        settle_session_task.delay(first.pk)
        settle_session_task.delay(second.pk)
        _wait(
            lambda: (
                ChargingSession.objects.filter(
                    pk__in=[first.pk, second.pk], state=SessionState.CLOSED
                ).count()
                == 2
            ),
            90,
            "both captures",
        )
    for session in (first, second):
        session.refresh_from_db()
        assert session.captured_amount_minor == 250
        assert len(_captures(emulator, emu_terminal, session)) == 1
    # Serialised: no capture was ever refused as Busy by the terminal itself.
    assert not TerminalTransaction.objects.filter(
        operation=Operation.CAPTURE, overall_result="Busy"
    ).exists()
