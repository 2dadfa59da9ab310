"""Idempotency-Key on the charger API: concurrent repeats, canonical bodies, failures, purge."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from evpay.models import JobRun
from sessions import api
from sessions.models import ApiKey, ChargingSession, IdempotencyRecord
from sessions.tasks import purge_idempotency_records_task
from tests.charging.conftest import make_world

pytestmark = pytest.mark.django_db(transaction=True)

# start_session only enqueues (the enqueued fixture records it): no terminal is contacted.
FAKE_TERMINAL = {"terminal_id": "IDEM1", "host": "127.0.0.1", "port0": 1}


@pytest.fixture
def world():
    terminal, connectors, _ = make_world(FAKE_TERMINAL)
    key, raw = ApiKey.issue("charger-1", terminal.site)
    return {"key": key, "raw": raw, "evse": connectors[0].evse_id, "other": connectors[1].evse_id}


def _start(client, raw, body, key="k-1"):
    return client.post(
        "/api/v1/sessions",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
        HTTP_IDEMPOTENCY_KEY=key,
    )


@pytest.mark.postgres
def test_twenty_concurrent_starts_with_one_key_make_one_session_and_twenty_same_answers(
    world, monkeypatch, enqueued
):
    # Found by a probe: 2 of 20 got a 409 (they ran the start beside the first one).
    count = 20
    barrier = threading.Barrier(count, timeout=30)
    real = ApiKey.authenticate.__func__

    def authenticate_together(cls, raw):
        key = real(cls, raw)
        barrier.wait()  # every request has passed authentication before any goes on
        return key

    monkeypatch.setattr(ApiKey, "authenticate", classmethod(authenticate_together))
    answers, errors = [], []

    def run():
        try:
            response = _start(Client(), world["raw"], {"evse_id": world["evse"]})
            answers.append((response.status_code, response.json()))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(answers) == count
    assert {status for status, _ in answers} == {202}, answers
    assert all(body == answers[0][1] for _, body in answers)
    assert ChargingSession.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert [name for name, _ in enqueued] == ["charging.authorise_session"]


def test_a_reformatted_identical_body_gets_the_stored_answer(client, world):
    first = _start(client, world["raw"], f'{{"evse_id": "{world["evse"]}"}}')
    again = _start(client, world["raw"], f'{{\n  "evse_id" :"{world["evse"]}"\n}}')
    assert first.status_code == again.status_code == 202, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert ChargingSession.objects.count() == 1


def test_the_same_key_with_another_body_is_refused_with_a_clear_message(client, world):
    _start(client, world["raw"], {"evse_id": world["evse"]})
    response = _start(client, world["raw"], {"evse_id": world["other"]})
    assert response.status_code == 422
    assert "already used for a different request" in response.json()["detail"]
    assert ChargingSession.objects.count() == 1


def test_a_database_failure_between_effects_and_record_leaves_nothing_and_the_retry_completes(
    client, world, monkeypatch, enqueued
):
    # Before: the session committed, the record did not, and the retry got a 409 without the
    # session id. Now the start and its answer commit together or not at all.
    real_save = IdempotencyRecord.save

    def fail_storing_the_answer(self, *args, **kwargs):
        if self.status_code:  # the answer, after the view's effects
            raise OperationalError("injected: connection lost")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(IdempotencyRecord, "save", fail_storing_the_answer)
    failed = _start(client, world["raw"], {"evse_id": world["evse"]})
    assert failed.status_code == 503
    assert ChargingSession.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
    assert enqueued == []  # the authorisation was never queued for a rolled-back session
    monkeypatch.setattr(IdempotencyRecord, "save", real_save)
    retry = _start(client, world["raw"], {"evse_id": world["evse"]})
    assert retry.status_code == 202, retry.content
    session = ChargingSession.objects.get()
    assert retry.json()["id"] == str(session.public_id)
    record = IdempotencyRecord.objects.get()
    assert (record.status_code, record.body["id"]) == (202, str(session.public_id))
    assert [name for name, _ in enqueued] == ["charging.authorise_session"]


def test_an_error_answer_is_not_stored_and_the_key_stays_usable(client, world):
    missing = _start(client, world["raw"], {"evse_id": "NL*NOPE"}, key="k-err")
    assert missing.status_code == 404
    assert IdempotencyRecord.objects.count() == 0


def test_purge_deletes_only_records_older_than_the_retention(world, settings):
    settings.EVPAY_IDEMPOTENCY_RETENTION_HOURS = 48
    now = timezone.now()
    for key, age in (("old", 49), ("edge", 47), ("new", 0)):
        IdempotencyRecord.objects.create(
            api_key=world["key"],
            key=key,
            fingerprint="x",
            status_code=202,
            body={},
            created_at=now - timedelta(hours=age),
        )
    purge_idempotency_records_task()
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {"edge", "new"}
    run = JobRun.objects.get(kind="idempotency_purge")
    assert (run.outcome, run.counts) == ("ok", {"deleted": 1})


def test_the_purge_is_scheduled_by_a_migration():
    # Run the migration's function again: transactional tests flush what migrations wrote.
    import importlib

    from django.apps import apps
    from django_celery_beat.models import PeriodicTask

    importlib.import_module("evpay.migrations.0014_idempotency_purge_schedule").create(apps, None)
    task = PeriodicTask.objects.get(name="Idempotency-Key records purge")
    assert task.task == "charging.purge_idempotency_records" and task.enabled


def test_fingerprint_ignores_spacing_and_key_order_but_not_method_or_path(rf):
    def fp(body, path="/api/v1/sessions"):
        return api._fingerprint(rf.post(path, body, content_type="application/json"))

    assert fp('{"a":1,"b":2}') == fp('{ "b": 2, "a": 1 }')
    assert fp('{"a":1}') != fp('{"a":2}')
    assert fp('{"a":1}') != fp('{"a":1}', path="/api/v1/sessions/x/stop")
