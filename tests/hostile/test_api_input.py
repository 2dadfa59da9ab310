"""Charger API input that a peer can send to break a session for everyone: out-of-range or
naive timestamps, booleans for numbers. Each is refused by name (422) and nothing is written."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.models import AuditEvent
from sessions.models import ApiKey, ChargingSession
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db, client):
    site = f.make_site()
    f.make_tariff(site)
    connector = f.make_connector(f.make_terminal(site))
    now = timezone.now()
    session = f.make_session(
        connector,
        state="authorised",
        close_reason="",
        requested_at=now - timedelta(minutes=10),
        authorised_at=now - timedelta(minutes=9),
        charging_started_at=None,
        charging_ended_at=None,
        closed_at=None,
        energy_wh=0,
        cost_total_minor=0,
        captured_amount_minor=0,
    )
    _, raw = ApiKey.issue("charger", site)

    def post(action, body):
        return client.post(
            f"/api/v1/sessions/{session.public_id}/{action}",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )

    def get():
        return client.get(
            f"/api/v1/sessions/{session.public_id}", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )

    return {"session": session, "post": post, "get": get, "now": now}


def _refused_by_name(response, field):
    assert response.status_code == 422, response.content
    assert response["Content-Type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert field in fields, response.json()


def _unchanged(session, audit_count):
    fresh = ChargingSession.objects.get(pk=session.pk)
    assert (fresh.state, fresh.charging_started_at, fresh.energy_wh) == (
        session.state,
        session.charging_started_at,
        session.energy_wh,
    )
    assert AuditEvent.objects.count() == audit_count


@pytest.mark.parametrize(
    "at",
    [
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC: PostgreSQL stores it, psycopg cannot read
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "2026-01-01T00:00:00",  # naive: whose clock?
        "2000-01-01T00:00:00+00:00",  # before the session existed
    ],
)
def test_charging_started_at_out_of_range_or_naive_is_refused_and_writes_nothing(api, at):
    audits = AuditEvent.objects.count()
    _refused_by_name(api["post"]("charging-started", {"at": at}), "at")
    _unchanged(api["session"], audits)
    # The session stays readable everywhere.
    assert api["get"]().status_code == 200


def test_at_before_the_session_was_requested_is_refused(api):
    before = (api["session"].requested_at - timedelta(minutes=55)).isoformat()
    response = api["post"]("charging-started", {"at": before})
    _refused_by_name(response, "at")
    assert "before the session" in response.json()["detail"]


def test_at_in_the_future_beyond_the_clock_skew_is_refused_but_within_it_accepted(api, settings):
    settings.EVPAY_CLOCK_SKEW_SECONDS = 120
    too_late = (timezone.now() + timedelta(seconds=300)).isoformat()
    _refused_by_name(api["post"]("charging-started", {"at": too_late}), "at")
    slightly_ahead = (timezone.now() + timedelta(seconds=60)).isoformat()
    response = api["post"]("charging-started", {"at": slightly_ahead})
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "charging"


def test_meter_at_year_9999_is_refused_not_an_integer_overflow(api):
    assert api["post"]("charging-started", {}).status_code == 200
    audits = AuditEvent.objects.count()
    response = api["post"]("meter", {"energy_wh": 1000, "at": "9999-12-31T23:59:59+00:00"})
    _refused_by_name(response, "at")
    fresh = ChargingSession.objects.get(pk=api["session"].pk)
    assert (fresh.energy_wh, fresh.meter_updated_at) == (0, None)
    assert AuditEvent.objects.count() == audits


def test_meter_at_before_charging_started_is_refused(api):
    assert api["post"]("charging-started", {}).status_code == 200
    early = (api["session"].requested_at + timedelta(seconds=1)).isoformat()
    _refused_by_name(api["post"]("meter", {"energy_wh": 1000, "at": early}), "at")


@pytest.mark.parametrize("action", ["meter", "charging-ended"])
@pytest.mark.parametrize("value", [True, False, 1.5, "1000", 10_000_001, -1, 2**63])
def test_energy_must_be_a_bounded_integer_not_a_boolean_or_string(api, action, value):
    assert api["post"]("charging-started", {}).status_code == 200
    audits = AuditEvent.objects.count()
    _refused_by_name(api["post"](action, {"energy_wh": value}), "energy_wh")
    fresh = ChargingSession.objects.get(pk=api["session"].pk)
    assert (fresh.state, fresh.energy_wh) == ("charging", 0)
    assert AuditEvent.objects.count() == audits


@pytest.mark.parametrize("action", ["charging-ended", "unplugged"])
def test_ended_and_unplugged_at_out_of_range_are_refused(api, action):
    assert api["post"]("charging-started", {}).status_code == 200
    body = {"at": "9999-12-31T23:59:59-14:00"}
    if action == "charging-ended":
        body["energy_wh"] = 10
    _refused_by_name(api["post"](action, body), "at")
    assert ChargingSession.objects.get(pk=api["session"].pk).state == "charging"


def test_a_nul_in_an_api_path_parameter_is_a_400_problem_not_a_500(api, client):
    raw = ApiKey.issue("other-charger", api["session"].site)[1]
    response = client.post(
        "/api/v1/terminals/T%00X/card-read",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "path"
