"""Input bounds shared by the API and the staff pages: what a hostile peer may not store.

PostgreSQL keeps timestamps psycopg cannot read back (after year 9999 in UTC), refuses NUL in
text and overflows on integers beyond bigint; SQLite accepts all of it. So bounds are checked
here, before a query, instead of being discovered as a 500 on every page that reads the row.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.utils import timezone

# Dates staff may filter on; anything outside is a typo or an attack, not a business question.
MIN_YEAR, MAX_YEAR = 2000, 2100
# Amounts in major units a filter may name (1e9 EUR is far beyond any charging session).
MAX_AMOUNT = Decimal("1000000000")


def clock_skew() -> timedelta:
    """How far ahead of our clock a charger's clock may run (EVPAY_CLOCK_SKEW_SECONDS)."""
    return timedelta(seconds=settings.EVPAY_CLOCK_SKEW_SECONDS)


def moment_error(at: datetime | None, not_before: datetime | None) -> str | None:
    """Why a reported moment is not plausible, or None when it is.

    A moment must carry its offset (a naive time names no instant), must not precede
    `not_before` (the session's request, or the step it follows) and must not be later
    than now plus the allowed clock skew.
    """
    if at is None:
        return None
    if timezone.is_naive(at):
        return "must include a UTC offset, e.g. 2026-01-01T12:00:00+01:00"
    latest = timezone.now() + clock_skew()
    # Compared as aware datetimes, never converted: astimezone() overflows for 9999-12-31
    # with a negative offset, the very value that must be refused.
    if at > latest:
        return f"is in the future (later than now + {settings.EVPAY_CLOCK_SKEW_SECONDS} s)"
    if not_before is not None and at < not_before:
        return f"is before the session's previous step ({not_before.isoformat()})"
    return None


def parse_amount(value) -> Decimal | None:
    """A finite decimal amount in major units within +-MAX_AMOUNT, or None."""
    if value is None:
        return None
    try:
        amount = Decimal(str(value).strip().replace(",", "."))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
        return None
    return amount


def parse_bounded_date(value) -> date | None:
    """A YYYY-MM-DD date between MIN_YEAR and MAX_YEAR, or None."""
    if not value:
        return None
    try:
        day = datetime.strptime(str(value), "%Y-%m-%d").date()
    except ValueError:
        return None
    return day if MIN_YEAR <= day.year <= MAX_YEAR else None


def parse_bounded_datetime(value) -> datetime | None:
    """An ISO datetime (a space stands for '+' from an unencoded query string) within the
    year bounds, with a real offset (at most +-24 h), made aware in the current zone; or None."""
    from django.utils.dateparse import parse_datetime

    if not value:
        return None
    try:
        moment = parse_datetime(str(value).replace(" ", "+"))
    except (ValueError, OverflowError):
        return None
    if moment is None or not (MIN_YEAR <= moment.year <= MAX_YEAR):
        return None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment
