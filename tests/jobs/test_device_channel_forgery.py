"""Issue 18 item 1: a channel-1 message speaks for a terminal only from that terminal's address
and for its open request's workstation. Before, anyone reaching the port could put text (a
typed card number) first on a victim's receipt and answer its DeliveryBox."""

import threading

import pytest
from django.db import connection

from sessions.device_channel import DatabaseDeviceHandler, accepted_request_for, source_allowed
from sessions.journal import open_transaction
from sessions.models import DeviceMessage, Operation
from terminals.models import Site, Terminal
from terminals.opi.messages import DeviceRequest, Output, OverallResult, TextLine

pytestmark = pytest.mark.django_db(transaction=True)


def _terminal(terminal_id="52000001", host="10.0.0.1", **profile):
    site, _ = Site.objects.get_or_create(name="Forgery")
    return Terminal.objects.create(
        terminal_id=terminal_id,
        name=terminal_id,
        site=site,
        host=host,
        profile={"workstation_id": "POS1", **profile},
    )


def _receipt(
    peer_host, terminal_id="52000001", workstation_id="POS1", text="VISA 411111******1111"
):
    request = DeviceRequest(
        "Output",
        "1-d0",
        workstation_id=workstation_id,
        terminal_id=terminal_id,
        outputs=[Output("PrinterReceipt", [TextLine(text)])],
    )
    request.peer_host = peer_host
    return request


def test_a_receipt_from_another_address_is_refused_and_nothing_is_stored():
    tx = open_transaction(_terminal(), Operation.CARD_TOKEN)
    handler = DatabaseDeviceHandler()
    forged = handler.handle(_receipt("10.6.6.6", text="PAN 4111111111111111 PAID"))
    assert forged.overall_result == OverallResult.FAILURE
    assert not DeviceMessage.objects.filter(transaction=tx).exists()
    real = handler.handle(_receipt("10.0.0.1"))
    assert real.overall_result == OverallResult.SUCCESS
    assert list(DeviceMessage.objects.filter(transaction=tx).values_list("lines", flat=True)) == [
        ["VISA 411111******1111"]
    ]


def test_a_message_naming_another_workstation_is_refused():
    tx = open_transaction(_terminal(), Operation.CARD_TOKEN)
    assert accepted_request_for(_receipt("10.0.0.1", workstation_id="EVIL")) is None
    assert accepted_request_for(_receipt("10.0.0.1")) == tx


def test_delivery_box_is_answered_only_for_the_terminals_own_address():
    tx = open_transaction(_terminal(), Operation.CARD_TOKEN)
    box = DeviceRequest(
        "Output",
        "1-d0",
        workstation_id="POS1",
        terminal_id="52000001",
        outputs=[Output("DeliveryBox", [TextLine("")])],
    )
    box.peer_host = "10.6.6.6"
    assert DatabaseDeviceHandler().handle(box).overall_result == OverallResult.FAILURE
    assert accepted_request_for(box) is None
    box.peer_host = "10.0.0.1"
    assert accepted_request_for(box) == tx


def test_sources_in_the_profile_allow_networks_and_names_and_nothing_else():
    nat = _terminal(host="terminal-7.example", channel1_sources=["192.168.10.0/29", "localhost"])
    assert source_allowed(nat, "192.168.10.5")
    assert source_allowed(nat, "::ffff:192.168.10.5"), "IPv4 seen on a dual-stack socket"
    assert source_allowed(nat, "127.0.0.1"), "a host name, resolved"
    assert not source_allowed(nat, "192.168.10.9")
    assert not source_allowed(nat, None)
    assert not source_allowed(nat, "not an address")
    plain = _terminal("52000002", host="10.0.0.2")
    assert source_allowed(plain, "10.0.0.2") and not source_allowed(plain, "10.0.0.3")


@pytest.mark.postgres
def test_messages_arriving_at_once_get_distinct_sequence_numbers():
    # Two connections of one terminal writing at the same moment: with count() both took the
    # same seq and the unique constraint refused one, which on a receipt means PrintLastTicket.
    tx = open_transaction(_terminal(), Operation.CARD_TOKEN)
    results = []
    barrier = threading.Barrier(8)

    def send(n):
        try:
            barrier.wait()
            results.append(DatabaseDeviceHandler().handle(_receipt("10.0.0.1", text=f"line {n}")))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.overall_result for r in results] == [OverallResult.SUCCESS] * 8
    seqs = sorted(DeviceMessage.objects.filter(transaction=tx).values_list("seq", flat=True))
    assert seqs == list(range(8))
