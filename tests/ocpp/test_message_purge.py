"""Charger messages that belong to no session are purged by age; a session's stay with it."""

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from evpay.models import JobRun
from sessions.models import OcppMessage
from sessions.tasks import purge_ocpp_messages_task
from terminals.models import ChargePoint
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db


def _message(charge_point, days_old, session=None, action="Heartbeat"):
    return OcppMessage.objects.create(
        charge_point=charge_point,
        session=session,
        direction=OcppMessage.Direction.IN,
        kind=OcppMessage.Kind.CALL,
        action=action,
        message_id=f"{action}-{days_old}-{session.pk if session else 0}",
        at=timezone.now() - timedelta(days=days_old),
    )


def test_old_messages_without_a_session_are_purged_and_a_sessions_are_kept(settings):
    settings.EVPAY_OCPP_MESSAGE_RETENTION_DAYS = 30
    site = f.make_site("Purge")
    session = f.make_session(f.make_connector(f.make_terminal(site)))
    charger = ChargePoint.objects.create(identity="CP-PURGE", site=site)
    old = _message(charger, 31)
    recent = _message(charger, 29)
    of_session = _message(charger, 90, session=session, action="MeterValues")
    purge_ocpp_messages_task()
    kept = set(OcppMessage.objects.values_list("pk", flat=True))
    assert kept == {recent.pk, of_session.pk} and old.pk not in kept
    run = JobRun.objects.get(kind="ocpp_message_purge")
    assert (run.outcome, run.counts) == ("ok", {"deleted": 1})


def test_the_purge_is_scheduled_by_a_migration():
    # Run the migration's function again: transactional tests flush what migrations wrote.
    migration = importlib.import_module("evpay.migrations.0018_ocpp_message_purge_schedule")
    migration.create(apps, None)
    task = PeriodicTask.objects.get(name="OCPP messages purge")
    assert task.task == "charging.purge_ocpp_messages" and task.enabled
