"""Fixed-window rate limits kept in the database, so they hold across gunicorn workers and hosts.

The cache is per process here (no CACHES configured: local memory), and pyrate-limiter's shared
buckets would need their own Redis or PostgreSQL connection beside Django's; a counter row per
key and window in the database every worker already uses is enough for the few public forms
that need a limit. Keys are HMACs of what they count (a client address, an e-mail address), so
the table holds no personal data in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from evpay.models import RateCounter

# Windows older than this are deleted when a new window starts: longer than any limit's window.
KEEP = timedelta(days=2)


def key_for(scope: str, value: str) -> str:
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"{scope}\x00{value}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{scope}:{digest[:64]}"


def _window_start(now: datetime, seconds: int) -> datetime:
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=now.tzinfo)


def hit(scope: str, value: str, *, limit: int, window_seconds: int) -> bool:
    """Count one hit; False (and nothing counted) when `limit` hits are already in the window."""
    now = timezone.now()
    key = key_for(scope, value)
    start = _window_start(now, window_seconds)
    with transaction.atomic():
        try:
            with transaction.atomic():
                counter, created = RateCounter.objects.get_or_create(key=key, window_start=start)
        except IntegrityError:  # another worker created it between our read and insert
            counter, created = RateCounter.objects.get(key=key, window_start=start), False
        if created:
            RateCounter.objects.filter(window_start__lt=now - KEEP).delete()
        # Conditional UPDATE: concurrent hits on PostgreSQL queue on the row and each sees the
        # count the one before it left, so exactly `limit` of them get through.
        return (
            RateCounter.objects.filter(pk=counter.pk, count__lt=limit).update(count=F("count") + 1)
            == 1
        )


def client_address(request) -> str:
    """The client's address: behind our proxy (EVPAY_BEHIND_PROXY) the last X-Forwarded-For
    entry, which our proxy appended; the earlier ones are whatever the client sent."""
    if settings.EVPAY_BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()[:64]
    return request.META.get("REMOTE_ADDR", "")[:64]
