"""A terminal is "unknown" until a status poll answers; an unanswered poll of an unknown
terminal raises no offline incident until the configured number of failures (real emulator)."""

import pytest

from evpay.audit import Actor
from evpay.models import ExceptionRecord
from terminals import services as terminal_services
from terminals.models import TerminalStatus
from tests.charging.conftest import authorised_session, make_world

pytestmark = pytest.mark.django_db(transaction=True)
JOB = Actor.job("test")


def test_a_new_terminal_is_unknown_until_its_first_poll_answers(emulator, emu_terminal):
    terminal, _, _ = make_world(emu_terminal)
    assert terminal.status == TerminalStatus.UNKNOWN and not terminal.is_online
    terminal_services.poll_status(terminal, JOB)
    terminal.refresh_from_db()
    assert terminal.is_online and terminal.status != TerminalStatus.UNKNOWN


def test_an_unanswered_poll_of_an_unknown_terminal_raises_no_offline_incident(
    emulator, emu_terminal, settings
):
    terminal, connectors, _ = make_world(emu_terminal)
    authorised_session(emulator, emu_terminal, connectors[0])  # an open session on it
    terminal.refresh_from_db()
    terminal.status = TerminalStatus.UNKNOWN
    terminal.save(update_fields=["status"])
    emulator.set_offline(emu_terminal["terminal_id"], True)
    for _ in range(settings.EVPAY_OFFLINE_AFTER_FAILURES - 1):
        terminal_services.poll_status(terminal, JOB)
        terminal.refresh_from_db()
    assert terminal.status == TerminalStatus.UNKNOWN
    assert not ExceptionRecord.objects.filter(kind="terminal_offline").exists()
    terminal_services.poll_status(terminal, JOB)
    terminal.refresh_from_db()
    assert terminal.status == TerminalStatus.OFFLINE
    assert ExceptionRecord.objects.filter(kind="terminal_offline").exists()
