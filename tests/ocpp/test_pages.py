"""Staff pages: a charger's connection on the terminal page, a session's OCPP messages."""

import pytest
from django.urls import reverse
from django.utils import timezone

from sessions.models import OcppMessage
from terminals.models import ChargePoint
from tests.dashboard.factories import make_connector, make_session, make_site, make_terminal

pytestmark = pytest.mark.django_db


@pytest.fixture
def ocpp_session():
    site = make_site()
    terminal = make_terminal(site)
    cp = ChargePoint.objects.create(
        identity="CP-PAGE-1", site=site, connected=True, firmware_version="4.2.0",
        ocpp_version="1.6", last_message_at=timezone.now(),
    )  # fmt: skip
    connector = make_connector(
        terminal, charge_point=cp, ocpp_connector_id=1, ocpp_status="Charging"
    )
    session = make_session(connector, ocpp_id_tag="EVPABCDEFGHIJKLMNOP", ocpp_transaction_id="7")
    for i, (direction, kind, action) in enumerate(
        [("in", "call", "StartTransaction"), ("out", "result", "StartTransaction")]
    ):
        OcppMessage.objects.create(
            charge_point=cp, session=session, direction=direction, kind=kind, action=action,
            message_id=f"m-{i}", payload={"meterStart": 1000, "note": "<b>x</b>"},
            note="a replay" if i == 0 else "",
        )  # fmt: skip
    return session


def test_the_session_page_shows_its_ocpp_messages_escaped(client_for, viewer, ocpp_session):
    response = client_for(viewer).get(reverse("sessions:detail", args=[ocpp_session.public_id]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "OCPP messages" in html and "StartTransaction" in html and "a replay" in html
    assert "EVPABCDEFGHIJKLMNOP" in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_a_session_without_ocpp_shows_no_ocpp_section(client_for, viewer):
    terminal = make_terminal(make_site())
    session = make_session(make_connector(terminal))
    html = client_for(viewer).get(reverse("sessions:detail", args=[session.public_id])).content
    assert b"OCPP messages" not in html


def test_the_terminal_page_shows_the_chargers_connection_and_connector_status(
    client_for, viewer, ocpp_session, django_assert_max_num_queries
):
    client = client_for(viewer)
    with django_assert_max_num_queries(40):
        response = client.get(reverse("terminals:detail", args=[ocpp_session.terminal.public_id]))
    html = response.content.decode()
    assert "CP-PAGE-1" in html and "connected" in html and "4.2.0" in html
    assert "Charging" in html


def test_the_terminal_status_poll_carries_the_chargers_live_status(
    client_for, viewer, ocpp_session
):
    client = client_for(viewer)
    connector = ocpp_session.connector
    connector.ocpp_status = "Finishing"
    connector.save(update_fields=["ocpp_status"])
    response = client.get(
        reverse("terminals:detail", args=[ocpp_session.terminal.public_id]) + "?part=status",
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200 and "CP-PAGE-1" in html and "Finishing" in html


def test_a_new_ocpp_message_tells_the_session_page_to_refresh_its_activity(
    client_for, viewer, ocpp_session
):
    client = client_for(viewer)
    page_url = reverse("sessions:detail", args=[ocpp_session.public_id])
    stamp = (
        client.get(page_url)
        .content.decode()
        .split('id="activity-stamp" name="seen" value="')[1]
        .split('"')[0]
    )
    poll = page_url + "?part=summary&seen=" + stamp
    assert "HX-Trigger" not in client.get(poll, HTTP_HX_REQUEST="true").headers
    OcppMessage.objects.create(
        charge_point=ocpp_session.connector.charge_point, session=ocpp_session, direction="in",
        kind="call", action="MeterValues", message_id="m-new", payload={},
    )  # fmt: skip
    response = client.get(poll, HTTP_HX_REQUEST="true")
    assert response.headers.get("HX-Trigger") == "session-changed"
