"""Recording job runs staff care about: one JobRun row per run, finished even on error."""

import logging
import traceback
from contextlib import contextmanager

from celery import current_task
from celery.exceptions import Retry
from django.utils import timezone

from evpay.models import JobRun

log = logging.getLogger(__name__)


class TryLater(Exception):
    """'Not now, try again later' (a terminal serving another request), not a failure.

    Apps subclass it (terminals.gateway.TerminalBusy) so job_run can tell a run that will be
    retried from one that failed without this base module importing them.
    """


def _retry_scheduled(exc: BaseException) -> bool:
    """Will this job get another attempt? Only then is the run "retrying" rather than "failed"."""
    if isinstance(exc, Retry):
        # A worker's Task.retry() raises Retry once it has sent the next attempt.
        return True
    if not isinstance(exc, TryLater):
        return False
    # Tasks catch TryLater outside the job_run block and call self.retry(), which re-raises
    # instead of retrying when called outside a worker or when retries are used up (the same
    # test as Task.retry's). Then this attempt was the last one: the job gave up.
    task = current_task  # a proxy, false while no task runs in this thread
    if not task or task.request.called_directly:
        return False
    return task.max_retries is None or task.request.retries < task.max_retries


def _retry_reason(exc: BaseException) -> str:
    if isinstance(exc, Retry):
        cause = f"{type(exc.exc).__name__}: {exc.exc}" if exc.exc is not None else "retry"
        return f"{cause} (next attempt {exc.humanize()})" if exc.when is not None else cause
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def job_run(kind: str, subject: str = "", triggered_by: str = "schedule"):
    """Yields the JobRun; put figures in run.counts. Errors re-raise and mark it FAILED, or
    RETRYING when another attempt is coming (celery Retry, or TryLater inside a task)."""
    run = JobRun.objects.create(kind=kind, subject=subject[:120], triggered_by=triggered_by[:150])
    try:
        yield run
    except Exception as exc:
        if _retry_scheduled(exc):
            # Expected and transient: the reason is enough, a traceback would read as a crash.
            run.outcome = JobRun.Outcome.RETRYING
            run.error = _retry_reason(exc)[:8000]
        else:
            run.outcome = JobRun.Outcome.FAILED
            run.error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}"[:8000]
        raise
    else:
        if run.outcome == JobRun.Outcome.RUNNING:
            run.outcome = JobRun.Outcome.PARTIAL if run.error else JobRun.Outcome.OK
    finally:
        run.finished_at = timezone.now()
        run.save(update_fields=["outcome", "error", "counts", "finished_at"])
