"""job_run: a "try later" that will be retried is recorded as retrying, not as a failure."""

import pytest
from celery import shared_task
from celery.exceptions import Retry

from evpay.jobs import TryLater, job_run
from evpay.models import JobRun

pytestmark = pytest.mark.django_db


class Busy(TryLater):
    """Stands in for terminals.gateway.TerminalBusy."""


# Shaped like terminals/tasks.py: the try-later leaves the job_run block, then self.retry().
@shared_task(bind=True, name="tests.busy_job", max_retries=2)
def busy_job(self, busy_attempts: int) -> None:
    try:
        with job_run("busy_job", "T1") as run:
            if self.request.retries < busy_attempts:
                raise Busy("terminal T1 is serving another request")
            run.counts = {"attempt": self.request.retries + 1}
    except Busy as exc:
        raise self.retry(exc=exc, countdown=1) from None


# self.retry() inside the block: job_run sees celery's Retry itself.
@shared_task(bind=True, name="tests.retry_inside_job", max_retries=1)
def retry_inside_job(self, failing_attempts: int) -> None:
    with job_run("retry_inside", "T1"):
        if self.request.retries < failing_attempts:
            raise self.retry(exc=ConnectionError("terminal T1 hung up"), countdown=4)


def outcomes(kind):
    return list(JobRun.objects.filter(kind=kind).order_by("id").values_list("outcome", flat=True))


def test_celery_retry_inside_a_job_run_is_recorded_as_retrying_not_failed():
    with pytest.raises(Retry), job_run("status_poll", "T1"):
        raise Retry(exc=ConnectionError("terminal T1 hung up"), when=5)
    run = JobRun.objects.get()
    assert run.outcome == JobRun.Outcome.RETRYING and run.finished_at is not None
    assert run.error == "ConnectionError: terminal T1 hung up (next attempt in 5s)"
    assert "Traceback" not in run.error


def test_a_real_failure_is_still_recorded_as_failed_with_its_traceback():
    with pytest.raises(ValueError), job_run("status_poll", "T1"):
        raise ValueError("bad answer")
    run = JobRun.objects.get()
    assert run.outcome == JobRun.Outcome.FAILED
    assert run.error.startswith("ValueError: bad answer") and "Traceback" in run.error


def test_a_busy_terminal_retried_by_its_task_shows_one_retry_then_the_success():
    busy_job.apply(args=[1])
    assert outcomes("busy_job") == ["retrying", "ok"]
    retry = JobRun.objects.filter(kind="busy_job").order_by("id").first()
    assert retry.error == "Busy: terminal T1 is serving another request"


def test_a_task_that_stays_busy_fails_only_on_its_last_attempt():
    busy_job.apply(args=[10])
    assert outcomes("busy_job") == ["retrying", "retrying", "failed"]


def test_celery_retry_raised_inside_the_block_is_retrying_and_giving_up_is_failed():
    retry_inside_job.apply(args=[1])
    assert outcomes("retry_inside") == ["retrying", "ok"]
    JobRun.objects.all().delete()
    retry_inside_job.apply(args=[10])
    # Past max_retries self.retry() re-raises the ConnectionError: the job gave up.
    assert outcomes("retry_inside") == ["retrying", "failed"]


def test_try_later_outside_a_task_is_a_failure_because_nothing_will_retry_it():
    with pytest.raises(Busy), job_run("closing", "T1", triggered_by="ada-admin"):
        raise Busy("terminal T1 is serving another request")
    assert outcomes("closing") == ["failed"]
