"""Helpers every staff page uses: paging, page-or-fragment, redirect after POST, CSV, filters."""

import csv
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from evpay.roles import OPERATE_PERM
from evpay.validation import parse_bounded_date

PAGE_SIZE = 50


def paginate(request, queryset, per_page: int = PAGE_SIZE):
    """A page of the queryset; a bad or too-large ?page= gives the nearest valid page."""
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def render_page(request, template: str, context: dict, partial: str | None = None, **kwargs):
    """One URL for page and fragment: htmx requests get only the named template partial."""
    if partial and request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{partial}", context, **kwargs)
    return render(request, template, context, **kwargs)


def after_post(request, fallback: str):
    """Redirect after a POST: HX-Location for htmx (no full reload), 302 otherwise.

    `next` (same host only) wins so an action taken from a list returns to that list.
    """
    target = request.POST.get("next") or ""
    # A path on this site only: redirect() would also try any other text as a URL name
    # ("NaN", "a:b"), which is a 500, not a redirect.
    if not target.startswith("/") or not url_has_allowed_host_and_scheme(
        target, {request.get_host()}, request.is_secure()
    ):
        target = ""
    target = target or fallback
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Location"] = target
        return response
    return HttpResponseRedirect(target)


class _Echo:
    def write(self, value):
        return value


@dataclass(frozen=True)
class CsvFlavour:
    """How an export writes times and numbers. "utc" is for machines (ISO 8601 in UTC, as
    before); "local" gives each row's times in its site's zone with the offset in the value;
    "excel-nl" is what Dutch Excel opens as numbers and dates on a double click: `;` between
    fields, a decimal comma, local times without the "T" and a UTF-8 byte order mark."""

    key: str
    suffix: str
    delimiter: str = ","
    decimal_comma: bool = False
    local: bool = False
    bom: bool = False

    def time(self, value, zone) -> str:
        if not value:
            return ""
        if not self.local:
            return value.isoformat()
        local = timezone.localtime(value, zone)
        if self.decimal_comma:  # Excel: a plain date-time; the offset gets its own column
            return local.strftime("%Y-%m-%d %H:%M:%S")
        return local.isoformat()

    def offset(self, value, zone) -> str:
        """The UTC offset of a local time, as +01:00 (empty in UTC exports)."""
        if not value or not self.local:
            return ""
        return timezone.localtime(value, zone).isoformat()[-6:]

    def number(self, text: str) -> str:
        return text.replace(".", ",") if self.decimal_comma else text


CSV_FLAVOURS = {
    "csv": CsvFlavour("csv", ""),
    "csv-local": CsvFlavour("csv-local", "-local", local=True),
    "csv-excel-nl": CsvFlavour(
        "csv-excel-nl", "-excel-nl", delimiter=";", decimal_comma=True, local=True, bom=True
    ),
}


def csv_response(
    filename: str, header: list[str], rows, flavour: CsvFlavour | None = None
) -> StreamingHttpResponse:
    """Stream a CSV (rows is any iterable, e.g. a queryset .iterator())."""
    flavour = flavour or CSV_FLAVOURS["csv"]
    writer = csv.writer(_Echo(), delimiter=flavour.delimiter)

    def lines():
        # Excel reads a file without the mark as the local code page, garbling "€" and "é".
        yield ("\ufeff" if flavour.bom else "") + writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def querystring(request, drop=("page",), **changes) -> str:
    """The current filters as a query string for a link: `drop` removed, `changes` set."""
    params = request.GET.copy()
    for key in drop:
        params.pop(key, None)
    for key, value in changes.items():
        params[key] = value
    return params.urlencode()


def parse_date(value: str | None):
    """A filter date, or None; only years 2000-2100, so `date + 1 day` and `start_of_day - 14 h`
    cannot overflow (HostileInputMiddleware already answers 400 for others on the staff pages)."""
    return parse_bounded_date(value)


def date_param(params, key: str, errors: dict) -> date | None:
    """A YYYY-MM-DD filter value; anything else puts a message for the field in `errors` and
    gives None, so the list is not filtered by it (rather than silently showing every row)."""
    value = (params.get(key) or "").strip()
    if not value:
        return None
    day = parse_date(value)
    # The last day has no "next day" to end the range at.
    if day is None or day == date.max:
        errors[key] = _(
            "“%(value)s” is not a date (use YYYY-MM-DD); not filtering by this date."
        ) % {"value": value}
        return None
    return day


def check_date_range(errors: dict, first: date | None, last: date | None, key: str = "to"):
    if first and last and first > last:
        errors[key] = _("This is before the “from” date, so nothing can match.")


def error_slots(errors: dict, fields: dict[str, str]) -> list[tuple[str, str]]:
    """(element id, message) for every filter field, empty when it is fine. A list fragment
    sends them out of band so the messages in the filter bar (outside the fragment) update."""
    return [(f"{field_id}-error", errors.get(name, "")) for name, field_id in fields.items()]


def parse_uuid(value) -> uuid.UUID | None:
    """A UUID from a query parameter, or None when it is not one (filters then match nothing)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def start_of_day(day, tz=None):
    return timezone.make_aware(datetime.combine(day, time.min), tz)


def end_of_day(day, tz=None):
    """The start of the next day: the exclusive end of `day`."""
    return start_of_day(day + timedelta(days=1), tz)


def can_operate(user) -> bool:
    return user.has_perm(OPERATE_PERM)
