"""A terminal that has not answered a status poll yet is "unknown": not online, not offline."""

import pytest

from evpay.models import ExceptionRecord
from terminals.models import Terminal, TerminalStatus
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def _fresh_terminal(site) -> Terminal:
    # Exactly what seed_demo and the admin create: no status given.
    return Terminal.objects.create(site=site, terminal_id="T0999999", name="Fresh", host="x")


def test_a_fresh_terminal_is_unknown_and_not_online(world):
    terminal = _fresh_terminal(world["site"])
    assert terminal.status == TerminalStatus.UNKNOWN
    assert terminal.get_status_display() == "Unknown"
    assert not terminal.is_online


def test_the_overview_counts_never_polled_terminals_as_unknown_not_offline(
    client_for, viewer, world
):
    _fresh_terminal(world["site"])
    f.make_terminal(world["site"], status=TerminalStatus.UNKNOWN)  # an unmapped answer
    html = client_for(viewer).get(url("overview")).content.decode()
    assert 'id="terminals-online">1 online' in html
    assert 'id="terminals-offline">0 offline' in html
    assert (
        'id="terminals-unknown" title="No status answer yet (not polled since start-up)">2 unknown'
        in html
    )
    assert ExceptionRecord.objects.filter(kind="terminal_offline").count() == 0


def test_the_overview_shows_no_unknown_badge_when_every_terminal_answered(
    client_for, viewer, world
):
    html = client_for(viewer).get(url("overview")).content.decode()
    assert 'id="terminals-unknown"' not in html


def test_the_terminal_list_shows_unknown_and_filters_it_apart_from_offline(
    client_for, viewer, world
):
    fresh = _fresh_terminal(world["site"])
    offline = f.make_terminal(world["site"], status=TerminalStatus.OFFLINE)
    client = client_for(viewer)
    page = client.get(url("terminals:list")).content.decode()
    assert 'data-status="UNKNOWN">Unknown</span>' in page
    unknown = client.get(url("terminals:list"), {"status": "UNKNOWN"}).content.decode()
    assert fresh.name in unknown and offline.name not in unknown
    only_offline = client.get(url("terminals:list"), {"status": "OFFLINE"}).content.decode()
    assert offline.name in only_offline and fresh.name not in only_offline
    online = client.get(url("terminals:list"), {"status": "online"}).content.decode()
    assert fresh.name not in online and offline.name not in online
