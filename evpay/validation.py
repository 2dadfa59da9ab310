"""Input bounds shared by the API and the staff pages: what a hostile peer may not store.

PostgreSQL keeps timestamps psycopg cannot read back (after year 9999 in UTC), refuses NUL in
text and overflows on integers beyond bigint; SQLite accepts all of it. So bounds are checked
here, before a query, instead of being discovered as a 500 on every page that reads the row.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- hostile requests

# C0 controls and DEL. PostgreSQL text cannot hold NUL at all (a 500 wherever it reaches a
# query); the others have no business in a URL, a filter or a one-line field either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A form's multi-line text (a note, a reason) may carry tabs and line breaks.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Longer than any filter or one-line field we have; a reason or note has room to spare.
MAX_GET_VALUE = 1000
MAX_POST_VALUE = 5000

# Query parameters with one meaning on every staff page: the filter forms name them so.
_AMOUNT_PARAMS = ("min", "max", "amount")
_DATE_PARAMS = ("from", "to", "date")
_DATETIME_PARAMS = ("since",)


def text_error(value: str) -> str | None:
    """Why a free text (a reason, a note) cannot be stored, or None: control characters other
    than tab and line breaks (escape sequences that rewrite a log or a terminal, NUL)."""
    found = _CONTROL_IN_TEXT.search(value)
    if found:
        return f"contains the control character {found.group()!r} at position {found.start()}"
    return None


def query_error(key: str, value: str) -> str | None:
    """Why one query parameter cannot be used, or None (in the request's language: the staff
    pages show it; the API always answers in English, evpay/i18n.py)."""
    if _CONTROL.search(key) or _CONTROL.search(value):
        return gettext("contains a control character")
    if len(value) > MAX_GET_VALUE:
        return gettext("is longer than %(max)d characters") % {"max": MAX_GET_VALUE}
    if not value.strip():
        return None
    # Amounts and dates that are not one at all ("x") are the page's to explain (the receipt
    # search says "Enter an amount like 12.50"); refused here is what parses but no query can
    # use: NaN, Infinity, 1e999999, year 9999 (+1 day overflows), year 1 (-14 h overflows).
    if key in _AMOUNT_PARAMS and _is_decimal(value) and parse_amount(value) is None:
        return gettext("is not a finite amount of at most %(max)s") % {"max": f"{MAX_AMOUNT:,}"}
    if key in _DATE_PARAMS and _is_date(value) and parse_bounded_date(value) is None:
        return gettext("is not a date between %(first)s and %(last)s") % {
            "first": f"{MIN_YEAR}-01-01",
            "last": f"{MAX_YEAR}-12-31",
        }
    if key in _DATETIME_PARAMS and parse_bounded_datetime(value) is None:
        return gettext("is not a date and time like 2026-01-01T12:00:00+01:00")
    return None


def _is_decimal(value: str) -> bool:
    try:
        Decimal(value.strip().replace(",", "."))
    except (InvalidOperation, ValueError):
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def form_error(key: str, value: str) -> str | None:
    if _CONTROL.search(key) or _CONTROL_IN_TEXT.search(value):
        return gettext("contains a control character")
    if len(value) > MAX_POST_VALUE:
        return gettext("is longer than %(max)d characters") % {"max": MAX_POST_VALUE}
    return None


def request_errors(request) -> list[tuple[str, str]]:
    """(field, why) for every part of the request no view should have to defend against."""
    errors = []
    if _CONTROL.search(request.path_info):
        errors.append(("path", gettext("contains a control character")))
    for key, values in request.GET.lists():
        for value in values:
            if why := query_error(key, value):
                errors.append((key, why))
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        for key, values in request.POST.lists():
            for value in values:
                if why := form_error(key, value):
                    errors.append((key, why))
    return errors


class HostileInputMiddleware:
    """Refuses with 400, before any view or query, a request whose path, query or form holds a
    control character, an over-long value or a typed filter (amount, date, cursor) that is not
    a finite, in-range value. One place instead of a check in every view: on PostgreSQL each of
    these was a 500 somewhere (NUL in text, NaN and 1e999999 as amounts, year 9999 + 1 day).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        errors = request_errors(request)
        if not errors:
            return self.get_response(request)
        # Field names only in the log: the values are what an attacker chose.
        log.info(
            "refused hostile input on %r: %s",
            request.path_info[:200],
            ", ".join(_printable(field) for field, _ in errors),
        )
        return bad_request(request, errors)


def bad_request(request, errors):
    described = [{"field": _printable(field), "message": why} for field, why in errors]
    if request.path_info.startswith("/api/"):
        body = {
            "type": "about:blank",
            "title": "Bad request",
            "status": 400,
            "detail": "; ".join(f"{e['field']}: {e['message']}" for e in described),
            "errors": described,
        }
        return JsonResponse(body, status=400, content_type="application/problem+json")
    if getattr(request, "htmx", False):
        # htmx swaps nothing on a 4xx, so the click would seem to do nothing: answer with the
        # message only (out of band), and leave the page as it is.
        text = "; ".join(f"{e['field']} {e['message']}" for e in described)
        messages.error(request, gettext("Not accepted: %(errors)s.") % {"errors": text})
        response = HttpResponse(render_to_string("includes/messages_oob.html", request=request))
        response["HX-Reswap"] = "none"
        return response
    html = render_to_string("400.html", {"errors": described}, request=request)
    return HttpResponseBadRequest(html)


def _printable(text: str) -> str:
    return _CONTROL.sub("?", text)[:60]


# --------------------------------------------------------------------------- VAT numbers

# The form of an EU VAT identification number (what VIES would be asked about): a country
# prefix, then the national pattern where we know it, else 2 to 13 letters and digits. Form only:
# whether the number is registered is VIES's to say, which finance checks before invoicing.
_VAT_FORMS = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "ES": r"[0-9A-Z]\d{7}[0-9A-Z]",
    "FR": r"[0-9A-HJ-NP-Z]{2}\d{9}",
    "IT": r"\d{11}",
    "LU": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "SE": r"\d{10}01",
}
_VAT_COUNTRIES = [
    "AT",
    "BE",
    "BG",
    "CY",
    "CZ",
    "DE",
    "DK",
    "EE",
    "EL",
    "ES",
    "FI",
    "FR",
    "HR",
    "HU",
    "IE",
    "IT",
    "LT",
    "LU",
    "LV",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SE",
    "SI",
    "SK",
    "XI",
]


def normalise_vat_number(value: str) -> str:
    return re.sub(r"[\s.\-]", "", value or "").upper()


def vat_number_error(value: str) -> str | None:
    """Why a VAT number is not in the form of an EU VAT number, or None."""
    number = normalise_vat_number(value)
    country, rest = number[:2], number[2:]
    if country not in _VAT_COUNTRIES:
        return gettext("must start with an EU country code, e.g. NL123456789B01")
    form = _VAT_FORMS.get(country, r"[0-9A-Z]{2,13}")
    if not re.fullmatch(form, rest):
        return gettext("is not in the form of a %(country)s VAT number") % {"country": country}
    return None


def validate_vat_number(value: str) -> None:
    """Django validator for model and form fields holding a VAT number."""
    from django.core.exceptions import ValidationError

    if error := vat_number_error(value):
        raise ValidationError(
            gettext("The VAT number %(error)s.") % {"error": error}, code="vat_number"
        )
