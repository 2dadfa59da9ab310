"""A real Celery worker consumes a task through the configured broker (filesystem or Redis)."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from evpay.celery import app
from evpay.models import Heartbeat
from evpay.tasks import heartbeat


@pytest.mark.django_db(transaction=True)
def test_worker_runs_a_task_through_the_configured_broker():
    print(f"broker: {app.conf.broker_url.split('://')[0]}://")
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"
    ):
        heartbeat.delay("pytest")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if Heartbeat.objects.filter(name="pytest").exists():
                break
            time.sleep(0.2)
    assert Heartbeat.objects.filter(name="pytest").exists(), "the worker never ran the task"


def test_celery_is_configured_as_the_architecture_requires():
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_time_limit and conf.task_soft_time_limit < conf.task_time_limit
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


@pytest.mark.django_db
def test_default_schedules_exist_and_are_editable_rows():
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(task="evpay.heartbeat", enabled=True).exists()
