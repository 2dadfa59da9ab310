"""Helpers every staff page uses: paging, page-or-fragment, redirect after POST, CSV, filters."""

import csv
import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.http import (
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.template.loader import get_template
from django.utils import timezone
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import parse_etags, url_has_allowed_host_and_scheme
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from evpay.roles import OPERATE_PERM
from evpay.validation import parse_bounded_date

PAGE_SIZE = 50


def paginate(request, queryset, per_page: int = PAGE_SIZE):
    """A page of the queryset; a bad or too-large ?page= gives the nearest valid page."""
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


# A keyset list counts its matches only up to here and says "10,000+" beyond: an exact count
# of a million sessions read the whole table on every page (issue 19, P3).
COUNT_LIMIT = 10_000
# The query parameters that say which page: a new sort, filter or export starts from the first.
PAGE_PARAMS = ("page", "after", "before")


class BadCursor(ValueError):
    """A ?after= / ?before= value that is not one this list wrote."""


@dataclass(frozen=True)
class KeysetOrder:
    """A list order by one column, tie-broken by id in the same direction, that pages by
    keyset: a page starts after (or ends before) the (value, id) of a row, so page 500 costs
    what page 1 does, where OFFSET read the 24,950 rows before it. NULL sorts above every value
    on every database (PostgreSQL's own default), so an index on (field DESC, id DESC) serves
    both directions."""

    field: str
    descending: bool
    nullable: bool = False

    def ordering(self, reverse: bool = False) -> list:
        descending = self.descending != reverse
        if not self.nullable:
            sign = "-" if descending else ""
            return [f"{sign}{self.field}", f"{sign}id"]
        column = (
            F(self.field).desc(nulls_first=True)
            if descending
            else F(self.field).asc(nulls_last=True)
        )
        return [column, F("id").desc() if descending else F("id").asc()]

    def after(self, value, pk: int, reverse: bool = False) -> Q:
        """The rows strictly after the row (value, pk) in this order (before it: reverse)."""
        descending = self.descending != reverse
        op = "lt" if descending else "gt"
        null = f"{self.field}__isnull"
        if value is None:
            # In the NULL block, which comes first when descending and last when ascending.
            rest = Q(**{null: True, f"pk__{op}": pk})
            return rest | Q(**{null: False}) if descending else rest
        # The inclusive bound is what an index can seek to; the OR only drops the ties.
        q = Q(**{f"{self.field}__{op}e": value}) & (
            Q(**{f"{self.field}__{op}": value}) | Q(**{f"pk__{op}": pk})
        )
        return q | Q(**{null: True}) if self.nullable and not descending else q

    def token(self, row) -> str:
        value = getattr(row, self.field)
        text = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else value
        return f"{text}~{row.pk}"

    def parse(self, model, token: str):
        """(value, pk) from token(); BadCursor when it is not one."""
        text, sep, pk = token.rpartition("~")
        if not sep or not pk.isdigit() or len(token) > 100:
            raise BadCursor(token)
        if text == "":
            if not self.nullable:
                raise BadCursor(token)
            return None, int(pk)
        try:
            value = model._meta.get_field(self.field).to_python(text)
        except ValidationError as exc:
            raise BadCursor(token) from exc
        if value is None:
            raise BadCursor(token)
        return value, int(pk)


@dataclass
class KeysetPage:
    """A page of a keyset list: iterate it for the rows; links carry the cursors."""

    rows: list
    has_previous: bool
    has_next: bool
    previous_query: str
    next_query: str
    first_query: str
    on_first_page: bool
    count: int
    count_capped: bool

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)


def keyset_page(request, queryset, order: KeysetOrder, per_page: int = PAGE_SIZE) -> KeysetPage:
    """The page of `queryset` (unordered or in `order`) that ?after= / ?before= point at, or
    the first. One query for the rows (one more than a page, to know if there is a next) and
    one count bounded by COUNT_LIMIT. BadCursor for a cursor this list did not write."""
    after, before = request.GET.get("after"), request.GET.get("before")
    model = queryset.model
    if before:
        value, pk = order.parse(model, before)
        qs = queryset.filter(order.after(value, pk, reverse=True)).order_by(*order.ordering(True))
        rows = list(qs[: per_page + 1])
        has_previous, has_next = len(rows) > per_page, True
        rows = rows[:per_page][::-1]
    else:
        qs = queryset.order_by(*order.ordering())
        if after:
            value, pk = order.parse(model, after)
            qs = qs.filter(order.after(value, pk))
        rows = list(qs[: per_page + 1])
        has_previous, has_next = bool(after), len(rows) > per_page
        rows = rows[:per_page]
    if not rows and (after or before):
        # Past either end (the rows were deleted since, an old link): only "first page".
        has_previous, has_next = False, False
    counted = queryset.order_by().values("pk")
    if not queryset.query.where:
        # Unfiltered: the first ids from the primary key's index, not the table's first pages.
        counted = counted.order_by("pk")
    count = counted[: COUNT_LIMIT + 1].count()
    drop = PAGE_PARAMS
    return KeysetPage(
        rows=rows,
        has_previous=has_previous and bool(rows),
        has_next=has_next and bool(rows),
        previous_query=querystring(request, drop, before=order.token(rows[0])) if rows else "",
        next_query=querystring(request, drop, after=order.token(rows[-1])) if rows else "",
        first_query=querystring(request, drop),
        on_first_page=not (after or before),
        count=min(count, COUNT_LIMIT),
        count_capped=count > COUNT_LIMIT,
    )


def render_page(request, template: str, context: dict, partial: str | None = None, **kwargs):
    """One URL for page and fragment: htmx requests get only the named template partial."""
    if partial and request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{partial}", context, **kwargs)
    return render(request, template, context, **kwargs)


# --------------------------------------------------------------------------- live polls
# 200 staff tabs poll fragments every 5 to 10 s (issue 19, P4). A fragment that has not changed
# is answered 304 from a fingerprint of what it shows, before any rendering: static/js/evpay.js
# sends the ETag of the fragment an element shows as If-None-Match, and htmx leaves the element
# as it is on a 304 (htmx-config responseHandling in templates/base.html).


@lru_cache(maxsize=64)
def _template_digest(name: str) -> str:
    """The source of a template: a deploy that changes the markup changes every ETag."""
    template = get_template(name).template
    return hashlib.blake2s(template.source.encode(), digest_size=8).hexdigest()


def fragment_etag(template: str, *shown) -> str:
    """A strong ETag for a fragment of `template` from the values it shows (repr-able), in the
    active language (the labels are translated)."""
    parts = repr((_template_digest(template), get_language(), shown))
    return '"' + hashlib.blake2s(parts.encode(), digest_size=12).hexdigest() + '"'


def not_modified(request, etag: str | None) -> HttpResponse | None:
    """304 when the poll already shows this fragment (its If-None-Match names the ETag)."""
    if etag and etag in parse_etags(request.headers.get("If-None-Match", "")):
        return tag_fragment(HttpResponseNotModified(), etag)
    return None


def tag_fragment(response, etag: str | None):
    """Give a fragment its ETag; private and revalidated, as it depends on who asks."""
    if etag:
        response["ETag"] = etag
    patch_cache_control(response, private=True, no_cache=True)
    # The same URL is the whole page without HX-Request.
    patch_vary_headers(response, ["HX-Request"])
    return response


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


CSV_CHUNK_ROWS = 200


def csv_response(
    filename: str, header: list[str], rows, flavour: CsvFlavour | None = None
) -> StreamingHttpResponse:
    """Stream a CSV (rows is any iterable, e.g. a queryset .iterator())."""
    flavour = flavour or CSV_FLAVOURS["csv"]
    writer = csv.writer(_Echo(), delimiter=flavour.delimiter)

    def lines():
        # Excel reads a file without the mark as the local code page, garbling "€" and "é".
        chunk = [("\ufeff" if flavour.bom else "") + writer.writerow(header)]
        # Some 200 rows a chunk: the response's per-chunk encoding was a fifth of a day's
        # export when every line was one (issue 19); memory stays that of one chunk.
        for row in rows:
            chunk.append(writer.writerow(row))
            if len(chunk) >= CSV_CHUNK_ROWS:
                yield "".join(chunk)
                chunk = []
        if chunk:
            yield "".join(chunk)

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
