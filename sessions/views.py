"""Charging sessions: list, CSV export, detail with timeline and operator actions, receipts."""

from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from evpay.models import AuditEvent, ExceptionRecord
from evpay.money import exponent, to_decimal_string
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.templatetags.evpay_tags import site_localtime
from evpay.web import (
    after_post,
    can_operate,
    csv_response,
    paginate,
    parse_date,
    parse_uuid,
    querystring,
    render_page,
    start_of_day,
)
from sessions import receipts as receipt_rendering
from sessions import services
from sessions.models import ChargingSession, SessionState
from terminals.models import Site, Terminal

SORTS = {
    "requested": "requested_at",
    "closed": "closed_at",
    "total": "cost_total_minor",
    "captured": "captured_amount_minor",
    "energy": "energy_wh",
    "state": "state",
}
DEFAULT_SORT = "-requested"


def _amount_q(field: str, lookup: str, value: str, currencies) -> Q | None:
    """A decimal amount in major units, matched per currency (exponents differ)."""
    try:
        amount = Decimal(value.replace(",", "."))
    except (InvalidOperation, AttributeError):
        return None
    q = Q()
    for currency in currencies:
        minor = int(amount.scaleb(exponent(currency)).to_integral_value())
        q |= Q(currency=currency, **{f"{field}__{lookup}": minor})
    return q


def _currencies() -> list[str]:
    return sorted(set(Site.objects.values_list("currency", flat=True))) or ["EUR"]


def session_queryset(params):
    """The filtered, sorted list; shared by the page, its fragment and the CSV export."""
    qs = ChargingSession.objects.select_related("site", "terminal", "connector")
    state = params.get("state")
    if state == "open":
        qs = qs.exclude(state=SessionState.CLOSED)
    elif state in SessionState.values:
        qs = qs.filter(state=state)
    for key, lookup in (("site", "site__public_id"), ("terminal", "terminal__public_id")):
        if params.get(key):
            value = parse_uuid(params[key])
            qs = qs.filter(**{lookup: value}) if value else qs.none()
    date_from, date_to = parse_date(params.get("from")), parse_date(params.get("to"))
    if date_from:
        qs = qs.filter(requested_at__gte=start_of_day(date_from))
    if date_to:
        qs = qs.filter(requested_at__lt=start_of_day(date_to + timedelta(days=1)))
    brand = (params.get("brand") or "").strip().upper()
    if brand:
        qs = qs.filter(card_brand=brand)
    currencies = None
    for key, lookup in (("min", "gte"), ("max", "lte")):
        if params.get(key):
            currencies = currencies or _currencies()
            q = _amount_q("cost_total_minor", lookup, params[key], currencies)
            qs = qs.filter(q) if q is not None else qs.none()
    q = (params.get("q") or "").strip()
    if q:
        as_uuid = parse_uuid(q)
        if as_uuid:
            qs = qs.filter(public_id=as_uuid)
        elif q.isdigit() and len(q) == 4:
            qs = qs.filter(pan_last4=q)
        else:
            qs = qs.filter(card_token=q)
    sort = params.get("sort") or DEFAULT_SORT
    field = SORTS.get(sort.lstrip("-"))
    if field is None:
        sort, field = DEFAULT_SORT, SORTS[DEFAULT_SORT.lstrip("-")]
    direction = "-" if sort.startswith("-") else ""
    return qs.order_by(f"{direction}{field}", f"{direction}id"), sort


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


def _csv_rows(sessions):
    for s in sessions:
        c = s.currency
        yield [
            s.public_id,
            s.requested_at.isoformat(),
            s.site.name,
            s.terminal.terminal_id,
            s.connector.evse_id,
            s.state,
            s.close_reason,
            s.card_brand,
            s.masked_pan,
            f"{s.energy_wh / 1000:.3f}",
            c,
            to_decimal_string(s.authorised_amount_minor, c),
            to_decimal_string(s.cost_total_minor, c),
            to_decimal_string(s.cost_vat_minor, c),
            to_decimal_string(s.captured_amount_minor, c),
            s.closed_at.isoformat() if s.closed_at else "",
        ]


@permission_required(VIEW_PERM)
@require_GET
def session_list(request):
    qs, sort = session_queryset(request.GET)
    if request.GET.get("format") == "csv":
        return csv_response("sessions.csv", CSV_HEADER, _csv_rows(qs.iterator(chunk_size=500)))
    sort_links = {}
    for key in SORTS:
        # Clicking the current column flips it; others start descending.
        target = key if sort == f"-{key}" else f"-{key}"
        sort_links[key] = {
            "query": querystring(request, sort=target),
            "current": sort.lstrip("-") == key,
            "aria": "descending" if sort.startswith("-") else "ascending",
        }
    context = {
        "page": paginate(request, qs),
        "sort": sort,
        "sort_links": sort_links,
        "states": [("open", "Open (any)"), *SessionState.choices],
        "sites": Site.objects.only("public_id", "name"),
        "terminals": Terminal.objects.only("public_id", "name", "terminal_id").order_by("name"),
        "csv_query": querystring(request, format="csv"),
    }
    return render_page(request, "sessions/list.html", context, partial="results")


def _get_session(public_id) -> ChargingSession:
    return get_object_or_404(
        ChargingSession.objects.select_related("site", "terminal", "connector"),
        public_id=public_id,
    )


@permission_required(VIEW_PERM)
@require_GET
def session_detail(request, public_id):
    session = _get_session(public_id)
    if request.htmx and request.GET.get("part") == "summary":
        # The live summary asks for itself by name: an HX-Location to this URL after an
        # action is an htmx request too, and must get the whole page.
        context = {"session": session, "site": session.site}
        return render(request, "sessions/detail.html#summary", context)
    transactions = list(session.transactions.order_by("id").prefetch_related("device_messages"))
    receipt_messages = [m for tx in transactions for m in tx.device_messages.all() if m.is_receipt]
    available = _available_actions(session, transactions)
    context = {
        "session": session,
        "site": session.site,
        "timeline": AuditEvent.objects.filter(session_ref=session.public_id).order_by("at", "id"),
        "transactions": transactions,
        "receipts": receipt_messages,
        "exceptions": ExceptionRecord.objects.filter(session_ref=session.public_id),
        "can_operate": can_operate(request.user),
        "actions": [
            {
                "key": key,
                "label": label,
                "question": question,
                "url": reverse(f"sessions:{URL_NAMES[key]}", args=[session.public_id]),
            }
            for key, (_fn, label, question) in ACTIONS.items()
            if key in available
        ],
    }
    return render(request, "sessions/detail.html", context)


def _available_actions(session, transactions) -> set[str]:
    """Only the actions that make sense in the session's state (the services refuse the rest)."""
    if session.state == SessionState.CLOSED:
        return set()
    available = {"resolve"}
    if session.state != SessionState.AUTHORISING:
        available |= {"capture", "release"}
    if any(tx.state in ("sent", "unknown") for tx in transactions):
        available.add("retry")
    return available


# action -> (service, button label, confirmation question); each service takes
# (session, user, reason) and raises JourneyError when the state does not allow it.
ACTIONS = {
    "capture": (
        services.operator_capture_now,
        "Capture now",
        "End the session and capture its cost now?",
    ),
    "release": (
        services.operator_release,
        "Release",
        "Waive the cost and release the reservation?",
    ),
    "retry": (
        services.operator_retry_recovery,
        "Retry recovery",
        "Retry recovery of unknown outcomes?",
    ),
    "resolve": (
        services.resolve_manually,
        "Resolve manually",
        "Close this session as resolved by staff?",
    ),
}
URL_NAMES = {
    "capture": "capture",
    "release": "release",
    "retry": "retry_recovery",
    "resolve": "resolve",
}


@permission_required(OPERATE_PERM)
@require_POST
def session_action(request, public_id, action):
    if action not in ACTIONS:
        raise Http404("unknown action")
    session = _get_session(public_id)
    detail_url = reverse("sessions:detail", args=[session.public_id])
    reason = request.POST.get("reason", "").strip()
    service, label, _question = ACTIONS[action]
    if not reason:
        messages.error(request, f"{label}: a reason is required.")
        return after_post(request, detail_url)
    try:
        with transaction.atomic():
            service(session, request.user, reason)
    except services.JourneyError as exc:
        messages.error(request, f"{label} was not possible: {exc}")
    else:
        messages.success(request, f"{label}: done.")
    return after_post(request, detail_url)


# --------------------------------------------------------------------------- receipts


def _receipt_context(session):
    receipt = receipt_rendering.build_receipt(session)
    return {"session": session, "site": session.site, "receipt": receipt}


@permission_required(VIEW_PERM)
@require_GET
def receipt(request, public_id):
    session = _get_session(public_id)
    return render(request, "sessions/receipt.html", _receipt_context(session))


def _attachment(body, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@permission_required(VIEW_PERM)
@require_GET
def receipt_text(request, public_id):
    session = _get_session(public_id)
    text = receipt_rendering.render_text(receipt_rendering.build_receipt(session))
    return _attachment(text, "text/plain; charset=utf-8", f"receipt-{session.public_id}.txt")


@permission_required(VIEW_PERM)
@require_GET
def receipt_pdf(request, public_id):
    session = _get_session(public_id)
    receipt = receipt_rendering.build_receipt(session)
    pdf = receipt_rendering.render_pdf(receipt_rendering.receipt_lines(receipt))
    return _attachment(pdf, "application/pdf", f"receipt-{session.public_id}.pdf")


@permission_required(VIEW_PERM)
@require_GET
def receipt_search(request):
    """Find a driver's receipt by the day, the amount paid and the card's last 4 digits."""
    qs = ChargingSession.objects.select_related("site", "terminal", "connector").exclude(
        masked_pan=""
    )
    params = request.GET
    day = parse_date(params.get("date"))
    if day:
        qs = qs.filter(
            requested_at__gte=start_of_day(day) - timedelta(hours=14),
            requested_at__lt=start_of_day(day + timedelta(days=1)) + timedelta(hours=14),
        )
    errors = {}
    if params.get("amount"):
        q = _amount_q("captured_amount_minor", "exact", params["amount"], _currencies())
        if q is None:
            errors["amount"] = "Enter an amount like 12.50"
            qs = qs.none()
        else:
            qs = qs.filter(q)
    last4 = (params.get("last4") or "").strip()
    if last4:
        if last4.isdigit() and len(last4) == 4:
            qs = qs.filter(pan_last4=last4)
        else:
            errors["last4"] = "Enter the last 4 digits of the card"
            qs = qs.none()
    sessions = list(qs.order_by("-requested_at", "-id")[:500])
    if day:
        # "That day" is the driver's day: the site's local date, not the server's.
        sessions = [s for s in sessions if site_localtime(s.requested_at, s.site).date() == day]
    context = {
        "page": paginate(request, sessions),
        "errors": errors,
        "searched": any(params.get(k) for k in ("date", "amount", "last4")),
    }
    return render_page(request, "sessions/receipts.html", context, partial="results")
