"""Charging sessions: list, CSV export, detail with timeline and operator actions, receipts."""

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from django.contrib import messages
from django.db import connection, transaction
from django.db.models import CharField, OuterRef, Q, Subquery
from django.db.models.functions import Cast
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from evpay import audit
from evpay.models import AuditEvent, ExceptionRecord
from evpay.money import decimal_string_formatter, exponent, format_money
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.templatetags.evpay_tags import BRAND_NAMES, site_localtime, site_zone
from evpay.web import (
    CSV_FLAVOURS,
    PAGE_PARAMS,
    BadCursor,
    KeysetOrder,
    after_post,
    can_operate,
    check_date_range,
    csv_response,
    date_param,
    end_of_day,
    error_slots,
    fragment_etag,
    keyset_page,
    not_modified,
    paginate,
    parse_uuid,
    querystring,
    render_page,
    start_of_day,
    tag_fragment,
)
from sessions import receipts as receipt_rendering
from sessions import services
from sessions.models import (
    ChargingSession,
    CloseReason,
    InvoiceRequest,
    OcppMessage,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from terminals.models import Connector, Site, Terminal, TerminalBrand

SORTS = {
    "requested": "requested_at",
    "closed": "closed_at",
    "total": "cost_total_minor",
    "captured": "captured_amount_minor",
    "energy": "energy_wh",
    "state": "state",
}
DEFAULT_SORT = "-requested"
# Columns without a value sort above every value (keyset pages need one NULL rule).
NULLABLE_SORTS = {"closed"}


def _amount_q(field: str, lookup: str, value: str, currencies) -> Q | None:
    """A decimal amount in major units, matched per currency (exponents differ)."""
    try:
        amount = Decimal(value.strip().replace(",", "."))
    except (InvalidOperation, AttributeError):
        return None
    # Beyond any charge (and what an integer column holds): "1e99" is a typo, not a filter.
    if not amount.is_finite() or abs(amount) >= 10**9:
        return None
    q = Q()
    for currency in currencies:
        minor = int(amount.scaleb(exponent(currency)).to_integral_value())
        q |= Q(currency=currency, **{f"{field}__{lookup}": minor})
    return q


def _currencies() -> list[str]:
    return sorted(set(Site.objects.values_list("currency", flat=True))) or ["EUR"]


def brand_choices() -> list[tuple[str, str]]:
    """(code, name) for the brand filter: the brands terminals reported, and the known ones."""
    names = dict(BRAND_NAMES)
    for code, display_name in TerminalBrand.objects.values_list("code", "display_name").distinct():
        names.setdefault(code, display_name or code)
    return sorted(names.items(), key=lambda item: item[1].lower())


def _brand_code(value: str, choices) -> str | None:
    """The code for a brand filter value: a code or a name, in any case (old links and
    hand-typed URLs say "Mastercard" or "visa"); None when it is neither."""
    wanted = value.strip().lower()
    for code, name in choices:
        if wanted in (code.lower(), name.lower()):
            return code
    return None


# Date presets of the session list, as (first day, last day) of a site's local today.
PERIODS = {
    "today": (gettext_lazy("Today"), lambda today: (today, today)),
    "yesterday": (
        gettext_lazy("Yesterday"),
        lambda today: (today - timedelta(days=1), today - timedelta(days=1)),
    ),
    "last7": (gettext_lazy("Last 7 days"), lambda today: (today - timedelta(days=6), today)),
    "month": (gettext_lazy("This month"), lambda today: (today.replace(day=1), today)),
}
PERIOD_CHOICES = [(key, label) for key, (label, _range) in PERIODS.items()]


def _local_days_q(field: str, zones, day_range) -> Q:
    """`field` within local days of each session's site: day_range(today) gives (first, last),
    either None, for today in that site's time zone. A session's day is its site's day."""
    q = Q()
    now = timezone.now()
    starts, ends = [], []
    for name in zones:
        zone = site_zone(name)
        first, last = day_range(timezone.localtime(now, zone).date())
        part = Q(site__time_zone=name)
        if first:
            starts.append(start_of_day(first, zone))
            part &= Q(**{f"{field}__gte": starts[-1]})
        if last:
            ends.append(end_of_day(last, zone))
            part &= Q(**{f"{field}__lt": ends[-1]})
        q |= part
    # The same bounds once more across every zone: PostgreSQL cannot use the OR of per-zone
    # ranges as an index condition, and a day's export read the whole table (issue 19, P3).
    if starts and len(starts) == len(zones):
        q &= Q(**{f"{field}__gte": min(starts)})
    if ends and len(ends) == len(zones):
        q &= Q(**{f"{field}__lt": max(ends)})
    return q


def _pan_q(q: str) -> Q | None:
    """A card search by digits: the last 4, the BIN (first 6) or a masked PAN as the terminal
    gives it ("541333******0434", "541333…0434", "5413 33** **** 0434"). None: not digits."""
    compact = q.replace(" ", "")
    if compact.isdigit():
        if len(compact) == 4:
            return Q(pan_last4=compact)
        if len(compact) == 6:
            return Q(masked_pan__startswith=compact)
        return Q(masked_pan__contains=compact)
    match = MASKED_PAN.fullmatch(compact)
    if match is None:
        return None
    first, last = match.groups()
    pan = Q()
    if first:
        pan &= Q(masked_pan__startswith=first)
    if last:
        pan &= Q(masked_pan__endswith=last)
    return pan


MASKED_PAN = re.compile(r"(\d*)(?:[*xX•…]|\.\.\.)+(\d*)")

# The session list's filter fields and the ids of their inputs (for the messages).
SESSION_FILTER_FIELDS = {
    "brand": "f-brand",
    "outcome": "f-outcome",
    "period": "f-period",
    "from": "f-from",
    "to": "f-to",
    "min": "f-min",
    "max": "f-max",
}


def session_queryset(params, brands=None):
    """The filtered, sorted list; shared by the page, its fragment and the CSV export.

    Returns (queryset, sort, errors): errors maps a filter field to a message saying why it
    was not applied; the other filters still are."""
    errors: dict[str, str] = {}
    qs = ChargingSession.objects.select_related("site", "terminal", "connector")
    state = params.get("state")
    if state == "open":
        qs = qs.exclude(state=SessionState.CLOSED)
    elif state in SessionState.values:
        qs = qs.filter(state=state)
    outcome = params.get("outcome")
    if outcome:
        if outcome in CloseReason.values:
            qs = qs.filter(close_reason=outcome)
        else:
            errors["outcome"] = _("Unknown outcome “%(value)s”; not filtering by outcome.") % {
                "value": outcome
            }
    for key, lookup in (("site", "site__public_id"), ("terminal", "terminal__public_id")):
        if params.get(key):
            value = parse_uuid(params[key])
            qs = qs.filter(**{lookup: value}) if value else qs.none()
    date_from, date_to = date_param(params, "from", errors), date_param(params, "to", errors)
    check_date_range(errors, date_from, date_to)
    period = params.get("period")
    if period and period not in PERIODS:
        errors["period"] = _("Unknown period “%(value)s”; not filtering by period.") % {
            "value": period
        }
        period = None
    if date_from or date_to or period:
        zones = list(Site.objects.values_list("time_zone", flat=True).distinct())
        if date_from or date_to:
            qs = qs.filter(_local_days_q("requested_at", zones, lambda _t: (date_from, date_to)))
        if period:
            qs = qs.filter(_local_days_q("requested_at", zones, PERIODS[period][1]))
    brand = (params.get("brand") or "").strip()
    if brand:
        code = _brand_code(brand, brands if brands is not None else brand_choices())
        if code:
            qs = qs.filter(card_brand=code)
        else:
            errors["brand"] = _("Unknown card brand “%(value)s”; not filtering by brand.") % {
                "value": brand
            }
    currencies = None
    for key, lookup, message in (
        (
            "min",
            "gte",
            _("“%(value)s” is not an amount (like 12.50); not filtering by minimum total."),
        ),
        (
            "max",
            "lte",
            _("“%(value)s” is not an amount (like 12.50); not filtering by maximum total."),
        ),
    ):
        if (params.get(key) or "").strip():
            currencies = currencies or _currencies()
            q = _amount_q("cost_total_minor", lookup, params[key], currencies)
            if q is None:
                errors[key] = message % {"value": params[key]}
            else:
                qs = qs.filter(q)
    q = (params.get("q") or "").strip()
    if q:
        as_uuid = parse_uuid(q)
        pan = _pan_q(q)
        if as_uuid:
            qs = qs.filter(public_id=as_uuid)
        elif pan is not None:
            qs = qs.filter(pan)
        else:
            qs = qs.filter(card_token=q)
    sort = params.get("sort") or DEFAULT_SORT
    if sort.lstrip("-") not in SORTS:
        sort = DEFAULT_SORT
    return qs.order_by(*session_order(sort).ordering()), sort, errors


def session_order(sort: str) -> KeysetOrder:
    """The keyset order of a valid `sort`; each has its index (ChargingSession.Meta)."""
    key = sort.lstrip("-")
    return KeysetOrder(SORTS[key], sort.startswith("-"), nullable=key in NULLABLE_SORTS)


CSV_HEADER = [
    "session",
    "requested_at",
    "site",
    "terminal_id",
    "evse_id",
    "state",
    "close_reason",
    "card_brand",
    "masked_pan",
    "energy_kwh",
    "currency",
    "authorised",
    "total",
    "vat",
    "captured",
    "closed_at",
]


def csv_header(flavour) -> list[str]:
    if not flavour.local:
        return CSV_HEADER
    # Say in the header which clock the times are on; Excel gets the offset as a column.
    header = [
        {"requested_at": "requested_at_site_time", "closed_at": "closed_at_site_time"}.get(h, h)
        for h in CSV_HEADER
    ]
    return [*header, "utc_offset", "time_zone"] if flavour.decimal_comma else [*header, "time_zone"]


# What a CSV row reads of a session: plain values, no model instances (a day is 11,000 rows).
CSV_COLUMNS = (
    "public_id",
    "requested_at",
    "site_id",
    "terminal_id",
    "connector_id",
    "state",
    "close_reason",
    "card_brand",
    "masked_pan",
    "energy_wh",
    "currency",
    "authorised_amount_minor",
    "cost_total_minor",
    "cost_vat_minor",
    "captured_amount_minor",
    "closed_at",
)


def _timestamps_as_text() -> bool:
    """Whether the export may read its two times as text: datetime.fromisoformat parses it in
    C, where psycopg's loader under Django's time-zone subclass is Python code, a third of a
    day's export on 1 M sessions (issue 19). SQLite stores that text; PostgreSQL writes it in
    ISO 8601 unless the server's DateStyle says otherwise (then the usual datetimes)."""
    if connection.vendor == "sqlite":
        return True
    if connection.vendor != "postgresql":
        return False
    connection.ensure_connection()
    return (connection.connection.info.parameter_status("DateStyle") or "").startswith("ISO")


def _utc_from_text(text):
    """A stored time read as text, as the aware UTC datetime the ORM would give."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:  # SQLite keeps UTC without an offset
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC) if value.utcoffset() else value


CSV_MEMO = 10_000


def _csv_money(currency: str, number):
    """An export's amount formatter for one currency and flavour, memoised."""
    formatted = decimal_string_formatter(currency)
    return lru_cache(maxsize=CSV_MEMO)(lambda minor: number(formatted(minor)))


def _csv_rows(qs, flavour=CSV_FLAVOURS["csv"]):
    """The export's rows, streamed: the sessions as value tuples in chunks, the names of their
    sites, terminals and connectors from three small lookups instead of three joins per row,
    and each currency's amount formatter made once."""
    number, time = flavour.number, flavour.time
    sites = {
        pk: (name, tz, site_zone(tz))
        for pk, name, tz in Site.objects.values_list("pk", "name", "time_zone")
    }
    terminal_ids = dict(Terminal.objects.values_list("pk", "terminal_id"))
    evse_ids = dict(Connector.objects.values_list("pk", "evse_id"))
    columns, as_text = list(CSV_COLUMNS), _timestamps_as_text()
    if as_text:
        qs = qs.annotate(
            requested_text=Cast("requested_at", CharField()),
            closed_text=Cast("closed_at", CharField()),
        )
        columns[CSV_COLUMNS.index("requested_at")] = "requested_text"
        columns[CSV_COLUMNS.index("closed_at")] = "closed_text"
    # Memoised (in C): a day repeats the same few thousand amounts and energies.
    amount = {}
    energy = lru_cache(maxsize=CSV_MEMO)(lambda wh: number(f"{wh / 1000:.3f}"))
    for (public_id, requested_at, site_id, terminal_id, connector_id, state, close_reason,
         card_brand, masked_pan, energy_wh, c, authorised, total, vat, captured,
         closed_at) in qs.values_list(*columns).iterator(chunk_size=2000):  # fmt: skip
        site_name, tz_name, zone = sites[site_id]
        if as_text:
            requested_at, closed_at = _utc_from_text(requested_at), _utc_from_text(closed_at)
        money = amount.get(c) or amount.setdefault(c, _csv_money(c, number))
        row = [
            public_id,
            time(requested_at, zone),
            site_name,
            terminal_ids[terminal_id],
            evse_ids[connector_id],
            state,
            close_reason,
            card_brand,
            masked_pan,
            energy(energy_wh),
            c,
            money(authorised),
            money(total),
            money(vat),
            money(captured),
            time(closed_at, zone),
        ]
        if flavour.decimal_comma:
            row.append(flavour.offset(requested_at, zone))
        if flavour.local:
            row.append(tz_name)
        yield row


@permission_required(VIEW_PERM)
@require_GET
def session_list(request):
    flavour = CSV_FLAVOURS.get(request.GET.get("format", ""))
    if flavour:
        # The brand choices are read only when filtering by brand: the export draws no form.
        qs, _sort, _errors = session_queryset(request.GET)
        return csv_response(
            f"sessions{flavour.suffix}.csv",
            csv_header(flavour),
            _csv_rows(qs, flavour),
            flavour,
        )
    brands = brand_choices()
    qs, sort, errors = session_queryset(request.GET, brands)
    try:
        page = keyset_page(request, qs, session_order(sort))
    except BadCursor:
        return HttpResponseBadRequest(_("This page link is not valid; open the list again."))
    sort_links = {}
    for key in SORTS:
        # Clicking the current column flips it; others start descending.
        target = key if sort == f"-{key}" else f"-{key}"
        sort_links[key] = {
            "query": querystring(request, drop=PAGE_PARAMS, sort=target),
            "current": sort.lstrip("-") == key,
            "aria": "descending" if sort.startswith("-") else "ascending",
        }
    context = {
        "page": page,
        "sort": sort,
        "sort_links": sort_links,
        "states": [("open", _("Open (any)")), *SessionState.choices],
        "outcomes": CloseReason.choices,
        "periods": PERIOD_CHOICES,
        "brands": brands,
        # A link saying brand=Mastercard shows as chosen in the select (whose values are codes).
        "brand_current": _brand_code(request.GET.get("brand", ""), brands) or "",
        "errors": errors,
        "error_slots": error_slots(errors, SESSION_FILTER_FIELDS),
        "sites": Site.objects.only("public_id", "name"),
        "terminals": Terminal.objects.only("public_id", "name", "terminal_id").order_by("name"),
        "csv_queries": {
            key.replace("-", "_"): querystring(request, drop=PAGE_PARAMS, format=key)
            for key in CSV_FLAVOURS
        },
    }
    return render_page(request, "sessions/list.html", context, partial="results")


def _get_session(public_id) -> ChargingSession:
    return get_object_or_404(
        ChargingSession.objects.select_related("site", "terminal", "connector"),
        public_id=public_id,
    )


OCPP_MESSAGES_SHOWN = 200


@permission_required(VIEW_PERM)
@require_GET
def session_detail(request, public_id):
    session = _get_session(public_id)
    part = request.GET.get("part") if request.htmx else None
    if part == "summary":
        # The live summary asks for itself by name: an HX-Location to this URL after an
        # action is an htmx request too, and must get the whole page.
        return _summary(request, session)
    transactions = list(session.transactions.order_by("id").prefetch_related("device_messages"))
    receipt_messages = [m for tx in transactions for m in tx.device_messages.all() if m.is_receipt]
    timeline = list(AuditEvent.objects.filter(session_ref=session.public_id).order_by("at", "id"))
    for event in timeline:
        event.label = audit.action_label(event.action, event.to_state)
        event.from_label = STATE_LABELS.get(event.from_state, event.from_state)
        event.to_label = STATE_LABELS.get(event.to_state, event.to_state)
    _explain_wallet_stops(session, timeline)
    exceptions = list(ExceptionRecord.objects.filter(session_ref=session.public_id))
    has_pending = any(tx.state in PENDING_TX_STATES for tx in transactions)
    # The driver's link and its QR code, for staff to show or send (no receipt number is
    # issued by looking at the session).
    receipt_link = receipt_rendering.public_url(session, request) if has_receipt(session) else ""
    # What the charger and we said over OCPP, like the raw XML of the terminal requests;
    # bounded (a charger may report every few seconds for hours): the newest are shown.
    ocpp_messages = list(session.ocpp_messages.order_by("-at", "-id")[:OCPP_MESSAGES_SHOWN])[::-1]
    for message in ocpp_messages:
        message.payload_text = json.dumps(message.payload, indent=1, sort_keys=True)
    context = {
        "receipt_link": receipt_link,
        "receipt_qr": receipt_rendering.qr_svg(receipt_link) if receipt_link else "",
        "session": session,
        "site": session.site,
        "timeline": timeline,
        "transactions": transactions,
        "receipts": receipt_messages,
        "exceptions": exceptions,
        "ocpp_messages": ocpp_messages,
        "ocpp_messages_limit": OCPP_MESSAGES_SHOWN,
        "has_receipt": has_receipt(session),
        "stamp": _stamp(
            session,
            max((e.pk for e in timeline), default=0),
            [(tx.pk, tx.state, tx.outcome) for tx in transactions],
            [(e.pk, e.resolved_at) for e in exceptions],
            max((m.pk for m in ocpp_messages), default=0),
        ),
        "polling": session.is_open,
        "can_operate": can_operate(request.user),
        "actions": action_forms(session, available_actions(session, has_pending)),
    }
    if part == "activity":
        return render(request, "sessions/detail.html#activity", context)
    return render(request, "sessions/detail.html", context)


def _explain_wallet_stops(session, timeline) -> None:
    """A stop by card whose card number differs from the paying card's gets `event.note`.

    A phone wallet pays with a device account number, not the card's own: the same card then
    reads as other digits at the stop. stop_by_card matched it on the terminal's card token
    or the payment account reference, so it is the same card, which the note says."""
    reads = {
        event.pk: event.data["card_read_tx"]
        for event in timeline
        if isinstance(event.data, dict) and event.data.get("card_read_tx")
    }
    if not reads or not session.masked_pan:
        return
    by_pk = TerminalTransaction.objects.filter(pk__in=set(reads.values())).in_bulk()
    for event in timeline:
        read = by_pk.get(reads.get(event.pk))
        if read is None or not read.masked_pan or read.masked_pan == session.masked_pan:
            continue
        matched = (
            _("card token")
            if read.card_token and read.card_token == session.card_token
            else _("payment account reference")
        )
        event.note = _(
            "Card %(read)s differs from the paying card %(paying)s: a phone wallet pays with a "
            "device account number, so the digits differ, but the %(matched)s matched. It is "
            "the same card."
        ) % {"read": read.masked_pan, "paying": session.masked_pan, "matched": matched}


def _summary(request, session):
    """The polled summary. It also tells the rest of the page when that is out of date: the
    page sends the stamp of what it shows, and a different one here fires `session-changed`,
    which makes the activity part (actions, timeline, transactions) fetch itself. So the cheap
    poll stays cheap, and a capture's answer shows without a reload. Unchanged, it is a 304
    before any rendering (evpay.web.fragment_etag of the session's row)."""
    stamp = _current_stamp(session)
    seen = request.GET.get("seen")
    stale = seen is not None and seen != stamp
    etag = None
    if not stale:
        # Out of date below: a 200 every time, so the HX-Trigger repeats until it refetched.
        etag = fragment_etag(
            "sessions/detail.html",
            [getattr(session, f.attname) for f in session._meta.concrete_fields],
            (session.site.name, session.site.time_zone),
            (session.terminal.public_id, session.terminal.name, session.connector.evse_id),
            stamp,
        )
        if response := not_modified(request, etag):
            return response
    context = {
        "session": session,
        "site": session.site,
        # Keep polling after the session closed until the page has shown its final state.
        "polling": session.is_open or stale,
    }
    response = render(request, "sessions/detail.html#summary", context)
    if stale:
        response["HX-Trigger"] = "session-changed"
    return tag_fragment(response, etag)


def _stamp(session, last_event_id, transactions, exceptions, last_ocpp_id=0) -> str:
    """A short fingerprint of what the activity part shows: state, timeline, requests,
    exceptions (a request's answer or an exception's resolution may write no timeline row) and
    the newest OCPP message (a charger's meter values change nothing else shown there)."""
    # Sorted by pk: the page and the poll read these rows in different orders.
    parts = repr(
        (session.state, last_event_id, sorted(transactions), sorted(exceptions), last_ocpp_id)
    )
    return hashlib.blake2s(parts.encode(), digest_size=8).hexdigest()


def _current_stamp(session) -> str:
    # The newest timeline row and OCPP message in one query (the poll runs every few seconds).
    last_event, last_ocpp = (
        ChargingSession.objects.filter(pk=session.pk)
        .annotate(
            last_event=Subquery(
                AuditEvent.objects.filter(session_ref=OuterRef("public_id"))
                .order_by("-pk")
                .values("pk")[:1]
            ),
            last_ocpp=Subquery(
                OcppMessage.objects.filter(session=OuterRef("pk")).order_by("-pk").values("pk")[:1]
            ),
        )
        .values_list("last_event", "last_ocpp")
        .get()
    )
    transactions = list(session.transactions.order_by("id").values_list("pk", "state", "outcome"))
    exceptions = list(
        ExceptionRecord.objects.filter(session_ref=session.public_id)
        .order_by("id")
        .values_list("pk", "resolved_at")
    )
    return _stamp(session, last_event or 0, transactions, exceptions, last_ocpp or 0)


# The from/to of a timeline row: a session's state, or a request's state or outcome.
STATE_LABELS = {**dict(TxState.choices), **dict(Outcome.choices), **dict(SessionState.choices)}

PENDING_TX_STATES = ("sent", "unknown")
ENDED_STATES = (SessionState.ENDED, SessionState.SETTLING)


def available_actions(session, has_pending: bool) -> set[str]:
    """Only the actions that make sense in the session's state (the services refuse the rest).

    has_pending: a request of the session is sent or unknown, so recovery can be retried."""
    if session.state == SessionState.CLOSED:
        return set()
    available = {"resolve"}
    if session.state != SessionState.AUTHORISING:
        available |= {"capture", "release"}
    if has_pending:
        available.add("retry")
    return available


def _closed_as(label, session) -> str:
    if session.close_reason == CloseReason.CAPTURED:
        captured = format_money(session.captured_amount_minor, session.currency)
        return _("%(action)s: the terminal answered; %(captured)s captured.") % {
            "action": label,
            "captured": captured,
        }
    return _("%(action)s: the session is closed (%(reason)s).") % {
        "action": label,
        "reason": str(session.get_close_reason_display()).lower(),
    }


def _capture_done(session, _result):
    if session.state == SessionState.CLOSED:
        return _closed_as(_("Capture now"), session), False
    if session.cost_total_minor == 0:
        return _("Nothing is owed, so the reservation's release is queued"), True
    cost = format_money(session.cost_total_minor, session.currency)
    return _("Capture of %(amount)s queued") % {"amount": cost}, True


def _release_done(session, _result):
    if session.state == SessionState.CLOSED:
        return _closed_as(_("Release"), session), False
    return _("Release queued"), True


def _retry_done(_session, pending_count):
    return _("Recovery queued for %(count)s request(s)") % {"count": pending_count}, True


def _resolve_done(_session, _result):
    return _("Resolve manually: done."), False


@dataclass(frozen=True)
class Action:
    """An operator action on a session. `service` takes (session, user, reason) and raises
    JourneyError when the state does not allow it; `done` says what really happened once it
    returned (most only queue work for the terminal): (message, still waiting for it)."""

    service: Callable
    label: str
    question: str
    done: Callable
    # Asked instead once charging is over: "end the session" would be wrong there.
    question_when_ended: str = ""

    def question_for(self, session) -> str:
        if self.question_when_ended and session.state in ENDED_STATES:
            return self.question_when_ended
        return self.question


ACTIONS = {
    "capture": Action(
        services.operator_capture_now,
        gettext_lazy("Capture now"),
        gettext_lazy("End the session and capture its cost now?"),
        _capture_done,
        question_when_ended=gettext_lazy("Capture the session's cost now?"),
    ),
    "release": Action(
        services.operator_release,
        gettext_lazy("Release"),
        gettext_lazy("End the session, waive its cost and release the reservation?"),
        _release_done,
        question_when_ended=gettext_lazy("Waive the cost and release the reservation?"),
    ),
    "retry": Action(
        services.operator_retry_recovery,
        gettext_lazy("Retry recovery"),
        gettext_lazy("Retry recovery of unknown outcomes?"),
        _retry_done,
    ),
    "resolve": Action(
        services.resolve_manually,
        gettext_lazy("Resolve manually"),
        gettext_lazy("Close this session as resolved by staff?"),
        _resolve_done,
    ),
}
URL_NAMES = {
    "capture": "capture",
    "release": "release",
    "retry": "retry_recovery",
    "resolve": "resolve",
}


def action_forms(session, keys, url=None) -> list[dict]:
    """What a page needs to draw the action forms for `keys`, in ACTIONS order. `url(key)`
    gives where a form posts; the session page's own URLs by default."""
    url = url or (lambda key: reverse(f"sessions:{URL_NAMES[key]}", args=[session.public_id]))
    return [
        {
            "key": key,
            "label": action.label,
            "question": action.question_for(session),
            "url": url(key),
        }
        for key, action in ACTIONS.items()
        if key in keys
    ]


def perform_action(request, session, key: str, updates: str) -> bool:
    """Run one of ACTIONS for the request's user with the posted reason, and say honestly what
    happened as a message; `updates` ends it while the terminal's answer is awaited (what
    will show it). Returns whether the service ran."""
    action = ACTIONS[key]
    reason = request.POST.get("reason", "").strip()
    if not reason:
        messages.error(request, _("%(action)s: a reason is required.") % {"action": action.label})
        return False
    try:
        with transaction.atomic():
            result = action.service(session, request.user, reason)
    except services.JourneyError as exc:
        messages.error(
            request,
            _("%(action)s was not possible: %(reason)s") % {"action": action.label, "reason": exc},
        )
        return False
    # Read back after the commit: with an in-process worker the answer may already be in.
    session.refresh_from_db()
    text, waiting = action.done(session, result)
    messages.success(request, f"{text}; {updates}" if waiting else text)
    return True


@permission_required(OPERATE_PERM)
@require_POST
def session_action(request, public_id, action):
    if action not in ACTIONS:
        raise Http404("unknown action")
    session = _get_session(public_id)
    perform_action(request, session, action, _("this page updates when the terminal answers."))
    return after_post(request, reverse("sessions:detail", args=[session.public_id]))


# --------------------------------------------------------------------------- receipts


# A receipt is proof of payment: the session closed with money captured.
SETTLED = Q(state=SessionState.CLOSED, captured_amount_minor__gt=0)
has_receipt = receipt_rendering.has_receipt


def _get_receipt_session(public_id) -> ChargingSession:
    session = _get_session(public_id)
    if not has_receipt(session):
        raise Http404("no receipt: the session has not been settled with a capture")
    return session


def _staff_receipt(request, public_id):
    session = _get_receipt_session(public_id)
    return session, receipt_rendering.receipt_for(session, audit.Actor.user(request.user), request)


@permission_required(VIEW_PERM)
@require_GET
def receipt(request, public_id):
    session, receipt = _staff_receipt(request, public_id)
    context = {
        "session": session,
        "site": session.site,
        "receipt": receipt,
        "qr_svg": receipt_rendering.qr_svg(receipt.link),
    }
    return render(request, "sessions/receipt.html", context)


def _attachment(body, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@permission_required(VIEW_PERM)
@require_GET
def receipt_text(request, public_id):
    _session, receipt = _staff_receipt(request, public_id)
    text = receipt_rendering.render_text(receipt)
    return _attachment(text, "text/plain; charset=utf-8", f"receipt-{receipt.number}.txt")


@permission_required(VIEW_PERM)
@require_GET
def receipt_pdf(request, public_id):
    _session, receipt = _staff_receipt(request, public_id)
    pdf = receipt_rendering.render_pdf(receipt)
    return _attachment(pdf, "application/pdf", f"receipt-{receipt.number}.pdf")


RECEIPT_FILTER_FIELDS = {"date": "r-date", "amount": "r-amount", "last4": "r-last4"}


@permission_required(VIEW_PERM)
@require_GET
def receipt_search(request):
    """Find a driver's receipt by the day, the amount paid and the card's last 4 digits."""
    # Only settled sessions have a receipt: one still charging or settling has paid nothing
    # yet, and would read as "Paid € 0.00" with a receipt to print.
    qs = (
        ChargingSession.objects.select_related("site", "terminal", "connector")
        .filter(SETTLED)
        .exclude(masked_pan="")
    )
    params = request.GET
    errors: dict[str, str] = {}
    day = date_param(params, "date", errors)
    if day:
        # Wide enough for any site's zone; the exact local day is checked below.
        qs = qs.filter(
            requested_at__gte=start_of_day(day) - timedelta(hours=14),
            requested_at__lt=end_of_day(day) + timedelta(hours=14),
        )
    if (params.get("amount") or "").strip():
        q = _amount_q("captured_amount_minor", "exact", params["amount"], _currencies())
        if q is None:
            errors["amount"] = _("Enter an amount like 12.50; not searching by amount.")
        else:
            qs = qs.filter(q)
    last4 = (params.get("last4") or "").strip()
    if last4:
        if last4.isdigit() and len(last4) == 4:
            qs = qs.filter(pan_last4=last4)
        else:
            errors["last4"] = _("Enter the last 4 digits of the card; not searching by card.")
    sessions = list(qs.order_by("-requested_at", "-id")[:500])
    if day:
        # "That day" is the driver's day: the site's local date, not the server's.
        sessions = [s for s in sessions if site_localtime(s.requested_at, s.site).date() == day]
    context = {
        "page": paginate(request, sessions),
        "errors": errors,
        "error_slots": error_slots(errors, RECEIPT_FILTER_FIELDS),
        "searched": any(params.get(k) for k in ("date", "amount", "last4")),
    }
    return render_page(request, "sessions/receipts.html", context, partial="results")


# --------------------------------------------------------------------------- invoice requests


@permission_required(VIEW_PERM)
@require_GET
def invoice_requests(request):
    """Drivers' requests for a company invoice (the public receipt page), for finance."""
    state = request.GET.get("state", InvoiceRequest.State.REQUESTED)
    qs = InvoiceRequest.objects.select_related("session__site", "session__issued_receipt")
    if state in InvoiceRequest.State.values:
        qs = qs.filter(state=state)
    else:
        state = ""
    context = {
        "page": paginate(request, qs.order_by("-created_at", "-id")),
        "state": state,
        "states": InvoiceRequest.State.choices,
        "can_operate": can_operate(request.user),
    }
    return render_page(request, "sessions/invoice_requests.html", context, partial="results")


@permission_required(OPERATE_PERM)
@require_POST
def invoice_request_mark(request, public_id):
    invoice = get_object_or_404(InvoiceRequest, public_id=public_id)
    state = request.POST.get("state", "")
    if state not in (InvoiceRequest.State.SENT, InvoiceRequest.State.REFUSED):
        messages.error(request, _("Choose whether the invoice was sent or refused."))
    elif invoice.mark(state, audit.Actor.user(request.user), request.POST.get("note", "")[:500]):
        messages.success(
            request,
            _("Invoice request of %(company)s marked “%(state)s”.")
            % {"company": invoice.company_name, "state": invoice.get_state_display()},
        )
    else:
        messages.info(request, _("That invoice request had already been handled."))
    return after_post(request, reverse("sessions:invoice_requests"))
