"""Which of our requests a channel-1 message belongs to when the terminal does not say.

Rows only, no sockets: the matching is a database question (sessions/device_channel.py).
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.device_channel import request_for
from sessions.journal import open_transaction
from sessions.models import Operation
from terminals.models import Site, Terminal
from terminals.opi.messages import DeviceRequest

pytestmark = pytest.mark.django_db(transaction=True)


def _terminal(terminal_id, host):
    site, _ = Site.objects.get_or_create(name="Matching")
    return Terminal.objects.create(
        terminal_id=terminal_id,
        name=terminal_id,
        site=site,
        host=host,
        profile={"workstation_id": "POS1", "channel1_grace_seconds": 2},
    )


def _device(request_id, terminal_id=None, peer_host=None, workstation_id="POS1"):
    request = DeviceRequest(
        "Output", request_id, workstation_id=workstation_id, terminal_id=terminal_id
    )
    request.peer_host = peer_host
    return request


@pytest.fixture
def two_open_requests():
    a, b = _terminal("52000001", "10.0.0.1"), _terminal("52000002", "10.0.0.2")
    # Each terminal counts its own RequestIDs: both have request 1 open at once.
    return open_transaction(a, Operation.CARD_TOKEN), open_transaction(b, Operation.CARD_TOKEN)


def test_the_terminal_id_decides_when_the_terminal_gives_it(two_open_requests):
    tx_a, tx_b = two_open_requests
    assert tx_a.request_id == tx_b.request_id
    assert request_for(_device("1-d0", terminal_id="52000002")) == tx_b
    assert request_for(_device("1-d0", terminal_id="52999999")) is None


def test_an_ambiguous_request_id_is_settled_by_the_peer_address_or_not_at_all(two_open_requests):
    tx_a, tx_b = two_open_requests
    assert request_for(_device("1-d0")) is None, "two terminals have request 1 open: no guess"
    assert request_for(_device("1-d0", peer_host="10.0.0.1")) == tx_a
    assert request_for(_device("1.2", peer_host="10.0.0.2")) == tx_b
    assert request_for(_device("1-d0", peer_host="10.9.9.9")) is None, "no terminal's address"
    assert request_for(_device("1-d0", terminal_id=None, peer_host="10.0.0.2")) == tx_b


def test_a_unique_request_id_or_the_only_open_request_of_the_workstation_matches():
    a, b = _terminal("52000001", "10.0.0.1"), _terminal("52000002", "10.0.0.2")
    b.next_request_id()  # b's counter runs ahead: its open request is 2, a's is 1
    tx_a = open_transaction(a, Operation.CARD_TOKEN)
    assert request_for(_device("1-d0")) == tx_a
    assert request_for(_device("77-d0")) == tx_a, "the workstation has one open request"
    open_transaction(b, Operation.CARD_TOKEN)
    assert request_for(_device("77-d0")) is None
    assert request_for(_device("1-d0", workstation_id="OTHER")) is None


def test_output_after_the_answer_is_kept_within_the_grace_only(two_open_requests):
    tx_a, _ = two_open_requests
    type(tx_a).objects.filter(pk=tx_a.pk).update(state="completed", completed_at=timezone.now())
    assert request_for(_device("1-d5", peer_host="10.0.0.1")) is None, "not open any more"
    assert request_for(_device("1-d5", peer_host="10.0.0.1"), late=True) == tx_a
    type(tx_a).objects.filter(pk=tx_a.pk).update(completed_at=timezone.now() - timedelta(seconds=3))
    assert request_for(_device("1-d5", peer_host="10.0.0.1"), late=True) is None
