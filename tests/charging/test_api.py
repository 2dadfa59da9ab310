"""The charger API: auth, scoping, problem+json errors, idempotency, and the journey."""

import psycopg
import pytest
from django.db import connection

from sessions.models import ApiKey, ChargingSession, IdempotencyRecord
from terminals.models import Site
from tests.charging.conftest import make_world, run_enqueued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(emu_terminal):
    terminal, connectors, tariff = make_world(emu_terminal)
    key, raw = ApiKey.issue("charger-1", terminal.site)
    return {"terminal": terminal, "connectors": connectors, "raw": raw, "info": emu_terminal}


def _post(client, path, raw, body=None, **headers):
    return client.post(
        f"/api/v1{path}",
        body or {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
        **headers,
    )


def test_missing_or_wrong_key_is_401_problem_json(client, world):
    response = client.post("/api/v1/sessions", {"evse_id": "x"}, content_type="application/json")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert "API key" in response.json()["detail"]
    assert _post(client, "/sessions", "evp_nope_nope", {"evse_id": "x"}).status_code == 401


def test_unknown_connector_and_other_sites_connector_are_the_same_404(client, world):
    # A 403 for another site's connector would tell a key holder which ids exist elsewhere.
    missing = _post(client, "/sessions", world["raw"], {"evse_id": "NL*NOPE"})
    other = Site.objects.create(name="Elsewhere")
    _, other_raw = ApiKey.issue("other", other)
    evse = world["connectors"][0].evse_id
    response = _post(client, "/sessions", other_raw, {"evse_id": evse})
    assert missing.status_code == response.status_code == 404
    assert response.json() == {**missing.json(), "detail": f"no connector {evse}"}
    assert ChargingSession.objects.count() == 0


def test_bad_input_names_the_field_and_writes_nothing(client, world):
    response = _post(client, "/sessions", world["raw"], {"evse": "typo"})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "evse_id"
    assert ChargingSession.objects.count() == 0


def test_control_characters_in_text_are_refused_by_name(client, world):
    # Found by schemathesis on PostgreSQL: a NUL in evse_id reached the query and gave a 500.
    response = _post(client, "/sessions", world["raw"], {"evse_id": "NL*X\u0000*1"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "evse_id"
    assert ChargingSession.objects.count() == 0


def test_revoked_keys_are_refused(client, world):
    ApiKey.objects.update(revoked=True)
    evse = world["connectors"][0].evse_id
    assert _post(client, "/sessions", world["raw"], {"evse_id": evse}).status_code == 401


def test_the_journey_through_the_api(client, world, emulator, enqueued):
    emulator.present_card(world["info"]["terminal_id"], "visa_ok")
    evse = world["connectors"][0].evse_id
    started = _post(client, "/sessions", world["raw"], {"evse_id": evse}, HTTP_IDEMPOTENCY_KEY="s1")
    assert started.status_code == 202, started.content
    sid = started.json()["id"]
    assert started.json()["action"] == "wait"
    run_enqueued(enqueued)
    state = client.get(
        f"/api/v1/sessions/{sid}", HTTP_AUTHORIZATION=f"Bearer {world['raw']}"
    ).json()
    assert (state["state"], state["action"]) == ("authorised", "start_charging")
    assert (
        _post(client, f"/sessions/{sid}/charging-started", world["raw"]).json()["action"]
        == "continue"
    )
    metered = _post(client, f"/sessions/{sid}/meter", world["raw"], {"energy_wh": 5000})
    assert metered.json()["cost"]["total"] == "2.50"
    ended = _post(client, f"/sessions/{sid}/charging-ended", world["raw"], {"energy_wh": 6000})
    assert ended.json()["action"] == "wait_for_unplug"
    done = _post(client, f"/sessions/{sid}/unplugged", world["raw"])
    assert done.status_code == 200 and done.json()["action"] == "done"
    run_enqueued(enqueued)
    session = ChargingSession.objects.get(public_id=sid)
    assert (session.state, session.captured_amount_minor) == ("closed", 290)


def test_idempotency_key_replays_the_first_answer(client, world):
    evse = world["connectors"][0].evse_id
    first = _post(client, "/sessions", world["raw"], {"evse_id": evse}, HTTP_IDEMPOTENCY_KEY="k-1")
    again = _post(client, "/sessions", world["raw"], {"evse_id": evse}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert ChargingSession.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
    # Without the key, a second start on the same connector is a conflict, not a new session.
    conflict = _post(client, "/sessions", world["raw"], {"evse_id": evse})
    assert conflict.status_code == 409 and "open session" in conflict.json()["detail"]


def test_idempotency_key_reused_for_another_body_is_refused(client, world):
    a, b = (c.evse_id for c in world["connectors"])
    _post(client, "/sessions", world["raw"], {"evse_id": a}, HTTP_IDEMPOTENCY_KEY="same")
    response = _post(client, "/sessions", world["raw"], {"evse_id": b}, HTTP_IDEMPOTENCY_KEY="same")
    assert response.status_code == 422
    assert ChargingSession.objects.count() == 1


def test_openapi_schema_is_served(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/sessions" in schema["paths"]


@pytest.mark.postgres
def test_a_dropped_database_connection_is_503_with_retry_after_and_the_retry_works(client, world):
    evse = world["connectors"][0].evse_id
    connection.ensure_connection()
    settings = connection.settings_dict
    # What a database restart or failover does to a web process: its connection is gone.
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    response = _post(
        client, "/sessions", world["raw"], {"evse_id": evse}, HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response["Content-Type"] == "application/problem+json"
    assert "retry" in response.json()["detail"]
    connection.close_if_unusable_or_obsolete()  # what Django does when a request ends
    assert ChargingSession.objects.count() == 0
    retry = _post(client, "/sessions", world["raw"], {"evse_id": evse}, HTTP_IDEMPOTENCY_KEY="k1")
    assert retry.status_code == 202, retry.content
    assert ChargingSession.objects.count() == 1
