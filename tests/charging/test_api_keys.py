"""API keys: expiry, rotation with overlap, and scoping that does not reveal other sites."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from evpay import audit
from evpay.models import AuditEvent
from sessions import services
from sessions.models import ApiKey, ChargingSession
from terminals.models import Site, Terminal
from tests.charging.conftest import make_world

pytestmark = pytest.mark.django_db(transaction=True)

FAKE_TERMINAL = {"terminal_id": "KEYS1", "host": "127.0.0.1", "port0": 1}


@pytest.fixture
def world():
    terminal, connectors, _ = make_world(FAKE_TERMINAL)
    key, raw = ApiKey.issue("charger-1", terminal.site)
    other_site = Site.objects.create(name="Elsewhere")
    _, other_raw = ApiKey.issue("other", other_site)
    return {
        "terminal": terminal,
        "key": key,
        "raw": raw,
        "other_raw": other_raw,
        "evse": connectors[0].evse_id,
    }


def _auth(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def _start(client, raw, evse):
    return client.post(
        "/api/v1/sessions", {"evse_id": evse}, content_type="application/json", **_auth(raw)
    )


def test_an_expired_key_is_refused_with_401_saying_it_expired(client, world):
    ApiKey.objects.filter(pk=world["key"].pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = _start(client, world["raw"], world["evse"])
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert ChargingSession.objects.count() == 0


def test_a_key_expiring_later_still_works(client, world):
    ApiKey.objects.filter(pk=world["key"].pk).update(expires_at=timezone.now() + timedelta(hours=1))
    assert _start(client, world["raw"], world["evse"]).status_code == 202


def test_rotate_api_key_prints_a_new_key_and_the_old_one_works_until_the_overlap_ends(
    client, world
):
    out = StringIO()
    before = timezone.now()
    call_command("rotate_api_key", "charger-1", "--overlap-hours", "2", stdout=out)
    raw = next(w for w in out.getvalue().split() if w.startswith("evp_"))
    new = ApiKey.objects.exclude(pk=world["key"].pk).get(name="charger-1")
    assert new.site_id == world["key"].site_id and new.expires_at is None
    assert new.key_hash == ApiKey.hash(raw) and raw not in new.key_hash  # stored hashed
    old = ApiKey.objects.get(pk=world["key"].pk)
    assert before + timedelta(hours=2) <= old.expires_at <= timezone.now() + timedelta(hours=2)
    # The overlap: both keys work.
    assert client.get("/api/v1/sessions/" + str(uuid.uuid4()), **_auth(raw)).status_code == 404
    assert _start(client, world["raw"], world["evse"]).status_code == 202
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now())
    assert _start(client, world["raw"], world["evse"]).status_code == 401


def test_rotate_api_key_defaults_to_24_hours_and_refuses_unknown_names(world):
    call_command("rotate_api_key", "charger-1", stdout=StringIO())
    old = ApiKey.objects.get(pk=world["key"].pk)
    assert abs(old.expires_at - (timezone.now() + timedelta(hours=24))) < timedelta(minutes=1)
    with pytest.raises(CommandError, match="no live API key"):
        call_command("rotate_api_key", "nobody", stdout=StringIO())


def test_the_admin_lists_expiry_and_rotates_keys(admin_client, world):
    page = admin_client.get("/admin/charging/apikey/")
    assert page.status_code == 200 and "Expires at" in page.content.decode()
    response = admin_client.post(
        "/admin/charging/apikey/",
        {"action": "rotate_keys", "_selected_action": [world["key"].pk]},
        follow=True,
    )
    assert "New API key for charger-1: evp_" in response.content.decode()
    assert ApiKey.objects.filter(name="charger-1").count() == 2
    assert ApiKey.objects.get(pk=world["key"].pk).expires_at is not None


def test_other_sites_session_is_the_same_404_as_a_missing_one(client, world):
    session = services.start_session(
        world["terminal"].connectors.first(), audit.Actor.charger("t"), enqueue=False
    )
    theirs = client.get(f"/api/v1/sessions/{session.public_id}", **_auth(world["other_raw"]))
    missing = client.get(f"/api/v1/sessions/{uuid.uuid4()}", **_auth(world["other_raw"]))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["title"] == missing.json()["title"]
    stop = client.post(
        f"/api/v1/sessions/{session.public_id}/stop",
        {},
        content_type="application/json",
        **_auth(world["other_raw"]),
    )
    assert stop.status_code == 404


def test_other_sites_terminal_is_the_same_404_as_a_missing_one(client, world, enqueued):
    def card_read(terminal_id):
        return client.post(
            f"/api/v1/terminals/{terminal_id}/card-read",
            content_type="application/json",
            **_auth(world["other_raw"]),
        )

    theirs = card_read(world["terminal"].terminal_id)
    missing = card_read("NOPE")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {
        **missing.json(),
        "detail": f"no terminal {FAKE_TERMINAL['terminal_id']}",
    }
    assert enqueued == []
    assert Terminal.objects.count() == 1


def test_a_chargers_reason_with_control_characters_is_refused_and_nothing_is_written(world):
    session = services.start_session(
        world["terminal"].connectors.first(), audit.Actor.charger("t"), enqueue=False
    )
    now = timezone.now()
    ChargingSession.objects.filter(pk=session.pk).update(
        state="charging", authorised_at=now, charging_started_at=now, authorised_amount_minor=5000
    )
    session.refresh_from_db()
    events = AuditEvent.objects.count()
    with pytest.raises(audit.InvalidReason, match="control character"):
        services.request_stop(session, audit.Actor.charger("api:x"), "stop\x1b[2J now")
    session.refresh_from_db()
    assert session.state == "charging" and AuditEvent.objects.count() == events


def test_our_own_reasons_are_never_refused(world):
    # A terminal's text quoted in a job's reason must not break the money record it explains.
    audit.record(audit.Actor.job("sweep"), world["terminal"], "tx.recovery", reason="bad\x1bline")
    assert AuditEvent.objects.filter(action="tx.recovery").count() == 1


def test_the_api_maps_an_invalid_reason_to_a_422_problem(rf):
    from sessions.api import on_invalid_reason

    response = on_invalid_reason(rf.post("/api/v1/x"), audit.InvalidReason("reason bad"))
    assert response.status_code == 422 and b"reason bad" in response.content


def test_last_used_is_kept_to_the_minute_without_a_write_on_every_call(
    client, world, django_assert_num_queries
):
    """A site's chargers share a key: a write of its row on every call serialised them all."""
    key = world["key"]
    _start(client, world["raw"], world["evse"])
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None and timezone.now() - first < timedelta(minutes=1)
    session = ChargingSession.objects.get()
    with django_assert_num_queries(2):  # the key and the session: no UPDATE of the key
        response = client.get(f"/api/v1/sessions/{session.public_id}", **_auth(world["raw"]))
    assert response.status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get(f"/api/v1/sessions/{session.public_id}", **_auth(world["raw"]))
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first
