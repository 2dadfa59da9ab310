"""Two processes settling one session at once move money once (PostgreSQL row semantics).

The barrier makes the race deterministic: both threads pass the "nothing settled yet" check
before either writes its capture row. The unique constraint `tx_one_live_settlement_per_auth`
is what stops the second; the negative control drops it and shows two captures being sent.
"""

import threading

import pytest
from django.db import connection

from sessions import journal, services
from sessions.models import Operation, SessionState, TerminalTransaction
from terminals.models import Terminal
from tests.charging.conftest import CHARGER, make_world, settling_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _settling_session(emulator, info):
    _, connectors, _ = make_world(info)
    return settling_session(emulator, info, connectors[0])


def _race(monkeypatch, session_pk):
    """Run settle_session in two threads that meet at a barrier just before claiming."""
    barrier = threading.Barrier(2, timeout=20)
    real_open = journal.open_transaction

    def open_after_barrier(*args, **kwargs):
        if args[1] in (Operation.CAPTURE, Operation.RELEASE):
            barrier.wait()
        return real_open(*args, **kwargs)

    monkeypatch.setattr(journal, "open_transaction", open_after_barrier)
    # Take the per-terminal lease out of the picture so only the database guard remains.
    monkeypatch.setattr(Terminal, "try_lease", lambda self, owner, seconds: True)
    errors = []

    def run():
        try:
            services.settle_session(session_pk, CHARGER)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def _captures_sent(session):
    return TerminalTransaction.objects.filter(session=session, operation=Operation.CAPTURE).count()


def test_two_concurrent_settlements_capture_exactly_once(emulator, emu_terminal, monkeypatch):
    session = _settling_session(emulator, emu_terminal)
    errors = _race(monkeypatch, session.pk)
    assert errors == []
    session.refresh_from_db()
    assert session.state == SessionState.CLOSED and session.captured_amount_minor == 250
    assert _captures_sent(session) == 1
    reservation = session.authorisation()
    captures = [
        r
        for r in emulator.ledger(emu_terminal["terminal_id"])
        if r["kind"] == "capture" and r.get("reservation_stan") == reservation.stan
    ]
    assert len(captures) == 1


def test_negative_control_without_the_constraint_both_processes_send_a_capture(
    emulator, emu_terminal, monkeypatch
):
    session = _settling_session(emulator, emu_terminal)
    constraint = next(
        c
        for c in TerminalTransaction._meta.constraints
        if c.name == "tx_one_live_settlement_per_auth"
    )
    with connection.schema_editor() as editor:
        editor.remove_constraint(TerminalTransaction, constraint)
    try:
        _race(monkeypatch, session.pk)
        assert _captures_sent(session) == 2, "without the guard the race sends two captures"
    finally:
        TerminalTransaction.objects.filter(session=session, operation=Operation.CAPTURE).delete()
        with connection.schema_editor() as editor:
            editor.add_constraint(TerminalTransaction, constraint)
