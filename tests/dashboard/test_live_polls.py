"""Live polls of unchanged fragments are 304s (ETag / If-None-Match) or 204s, before rendering;
a change gives a 200 with the new fragment (issue 19, P4)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions.models import ChargingSession
from terminals.models import ChargePoint, Terminal, TerminalStatus
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db

POLL = {"HTTP_HX_REQUEST": "true", "HTTP_X_EVPAY_POLL": "1"}


def _poll(client, path, params=None, etag=None):
    headers = POLL | ({"HTTP_IF_NONE_MATCH": etag} if etag else {})
    return client.get(path, params or {}, **headers)


def _seen(client, path) -> str:
    """The stamp the full page sends with its poll (the hidden input named seen)."""
    import re

    html = client.get(path).content.decode()
    return re.search(r'name="seen" value="([0-9a-f]+)"', html).group(1)


def test_an_unchanged_terminal_status_is_a_304_and_a_change_a_200(
    client_for, viewer, world, django_assert_max_num_queries
):
    client = client_for(viewer)
    terminal = world["terminal"]
    path = url("terminals:detail", terminal.public_id)
    params = {"part": "status", "seen": _seen(client, path)}
    first = _poll(client, path, params)
    assert first.status_code == 200 and first["ETag"].startswith('"')
    assert "private" in first["Cache-Control"] and "no-cache" in first["Cache-Control"]
    assert "HX-Request" in first["Vary"]
    # 4 for the log-in, the terminal, its panels' stamp, its OCPP connectors (for the ETag).
    with django_assert_max_num_queries(8):
        again = _poll(client, path, params, first["ETag"])
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == first["ETag"]
    Terminal.objects.filter(pk=terminal.pk).update(
        status=TerminalStatus.OFFLINE, status_changed_at=timezone.now()
    )
    changed = _poll(client, path, params, first["ETag"])
    assert changed.status_code == 200 and changed["ETag"] != first["ETag"]
    assert 'data-status="OFFLINE"' in changed.content.decode()


def test_a_change_on_the_terminals_ocpp_charger_makes_its_status_poll_a_200(
    client_for, viewer, world
):
    client = client_for(viewer)
    terminal = world["terminal"]
    charger = ChargePoint.objects.create(identity="CP-POLL-1", site=terminal.site)
    terminal.connectors.update(charge_point=charger)
    path = url("terminals:detail", terminal.public_id)
    params = {"part": "status", "seen": _seen(client, path)}
    first = _poll(client, path, params)
    assert _poll(client, path, params, first["ETag"]).status_code == 304
    ChargePoint.objects.filter(pk=charger.pk).update(connected=True)
    changed = _poll(client, path, params, first["ETag"])
    assert changed.status_code == 200 and "CP-POLL-1" in changed.content.decode()


def test_a_terminal_status_whose_panels_are_out_of_date_is_always_a_200_with_its_trigger(
    client_for, viewer, world
):
    client = client_for(viewer)
    path = url("terminals:detail", world["terminal"].public_id)
    params = {"part": "status", "seen": "0000000000000000"}
    first = _poll(client, path, params)
    assert first["HX-Trigger"] == "terminal-changed" and "ETag" not in first
    again = _poll(client, path, params, '"anything"')
    assert again.status_code == 200 and again["HX-Trigger"] == "terminal-changed"


def test_an_unchanged_session_summary_is_a_304_and_a_change_a_200(
    client_for, viewer, world, django_assert_max_num_queries
):
    client = client_for(viewer)
    session = world["charging"]
    path = url("sessions:detail", session.public_id)
    params = {"part": "summary", "seen": _seen(client, path)}
    first = _poll(client, path, params)
    assert first.status_code == 200 and "ETag" in first and "HX-Trigger" not in first
    with django_assert_max_num_queries(8):
        again = _poll(client, path, params, first["ETag"])
    assert again.status_code == 304 and again.content == b""
    ChargingSession.objects.filter(pk=session.pk).update(energy_wh=12_345)
    changed = _poll(client, path, params, first["ETag"])
    assert changed.status_code == 200 and "12.345" in changed.content.decode()


def test_a_session_summary_that_is_out_of_date_below_keeps_its_trigger_and_its_200(
    client_for, viewer, world
):
    client = client_for(viewer)
    path = url("sessions:detail", world["charging"].public_id)
    params = {"part": "summary", "seen": "0000000000000000"}
    first = _poll(client, path, params)
    again = _poll(client, path, params, first.get("ETag", '"x"'))
    assert again.status_code == 200 and again["HX-Trigger"] == "session-changed"


def test_an_unchanged_overview_is_a_304_and_a_terminal_going_offline_a_200(
    client_for, viewer, world
):
    client = client_for(viewer)
    first = _poll(client, url("overview"))
    assert first.status_code == 200 and b"<html" not in first.content and "ETag" in first
    again = _poll(client, url("overview"), etag=first["ETag"])
    assert again.status_code in (200, 304)  # 200 only if the minute turned in between
    if again.status_code == 200:
        first, again = again, _poll(client, url("overview"), etag=again["ETag"])
    assert again.status_code == 304
    Terminal.objects.filter(pk=world["terminal"].pk).update(status=TerminalStatus.OFFLINE)
    changed = _poll(client, url("overview"), etag=first["ETag"])
    assert changed.status_code == 200 and b"1 offline" in changed.content


def test_a_stale_etag_from_another_language_or_markup_is_not_a_match(client_for, viewer, world):
    from django.utils import translation

    from evpay.web import fragment_etag

    with translation.override("en"):
        english = fragment_etag("overview.html", 1)
    with translation.override("nl"):
        dutch = fragment_etag("overview.html", 1)
    assert english != dutch != fragment_etag("terminals/detail.html", 1)


def test_the_full_pages_carry_no_etag(client_for, viewer, world):
    client = client_for(viewer)
    for path in (url("overview"), url("terminals:detail", world["terminal"].public_id)):
        assert "ETag" not in client.get(path)


def test_an_unchanged_terminal_list_poll_is_an_empty_204(client_for, viewer, world):
    since = (timezone.now() + timedelta(seconds=1)).isoformat()
    response = _poll(client_for(viewer), url("terminals:list"), {"since": since})
    assert response.status_code == 204 and response.content == b""
