"""A terminal held for a moment is waited for in the worker, a bounded time, not by a retry."""

import threading
import time

import pytest
from django.db import connection, transaction

from terminals import gateway
from terminals.opi.profile import Operation
from tests.dashboard import factories as f

# Another thread releases the lease: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def _release_later(terminal, owner, after):
    def release():
        time.sleep(after)
        terminal.release_lease(owner)
        connection.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_lease_freed_within_the_wait_is_taken_without_a_terminal_busy():
    terminal = f.make_terminal()
    assert terminal.try_lease("the other connector's capture", 60)
    thread = _release_later(terminal, "the other connector's capture", 0.2)
    started = time.monotonic()
    with gateway.leased(terminal, Operation.STATUS) as lease:
        waited = time.monotonic() - started
        terminal.refresh_from_db()
        assert terminal.lease_owner == lease.owner
    thread.join()
    assert 0.15 < waited < gateway.LEASE_WAIT_SECONDS


def test_a_terminal_held_longer_than_the_wait_is_busy_after_it():
    terminal = f.make_terminal()
    assert terminal.try_lease("a driver tapping", 60)
    started = time.monotonic()
    with pytest.raises(gateway.TerminalBusy), gateway.leased(terminal, Operation.STATUS):
        pass
    assert time.monotonic() - started >= gateway.LEASE_WAIT_SECONDS


def test_inside_a_transaction_it_does_not_wait():
    terminal = f.make_terminal()
    assert terminal.try_lease("someone else", 60)
    started = time.monotonic()
    with (
        transaction.atomic(),
        pytest.raises(gateway.TerminalBusy),
        gateway.leased(terminal, Operation.STATUS),
    ):
        pass
    assert time.monotonic() - started < gateway.LEASE_WAIT_SECONDS / 2
