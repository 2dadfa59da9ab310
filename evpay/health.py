"""Liveness/readiness for load balancers: no login, no secrets, 200 or 503."""

import logging
import time

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        log.warning("healthz: database check failed: %s", exc)
        return type(exc).__name__
    return None


def _check_broker() -> str | None:
    from django.conf import settings

    from evpay.broker import transport_for
    from evpay.celery import app

    url = settings.CELERY_BROKER_URL
    try:
        # The URL from settings, so the check follows what this process was configured with.
        with app.connection_for_write(url=url, transport=transport_for(url)) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        log.warning("healthz: broker check failed: %s", exc)
        return type(exc).__name__
    return None


@never_cache
@require_GET
def healthz(request):
    started = time.monotonic()
    checks = {}
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        error = check()
        # Only the exception's class name: messages may carry hosts or credentials.
        checks[name] = {"ok": error is None} | ({"error": error} if error else {})
    ok = all(c["ok"] for c in checks.values())
    body = {
        "status": "ok" if ok else "fail",
        "checks": checks,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if ok else 503)
