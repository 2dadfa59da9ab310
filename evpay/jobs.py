"""Recording job runs staff care about: one JobRun row per run, finished even on error."""

import logging
import traceback
from contextlib import contextmanager

from django.utils import timezone

from evpay.models import JobRun

log = logging.getLogger(__name__)


@contextmanager
def job_run(kind: str, subject: str = "", triggered_by: str = "schedule"):
    """Yields the JobRun; put figures in run.counts. Errors mark it FAILED and re-raise."""
    run = JobRun.objects.create(kind=kind, subject=subject[:120], triggered_by=triggered_by[:150])
    try:
        yield run
    except Exception as exc:
        run.outcome = JobRun.Outcome.FAILED
        run.error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}"[:8000]
        raise
    else:
        if run.outcome == JobRun.Outcome.RUNNING:
            run.outcome = JobRun.Outcome.PARTIAL if run.error else JobRun.Outcome.OK
    finally:
        run.finished_at = timezone.now()
        run.save(update_fields=["outcome", "error", "counts", "finished_at"])
