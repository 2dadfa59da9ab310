"""Terminal fleet pages: list with live badges, detail with actions, period closings."""

import hashlib
from datetime import timedelta

from django.contrib import messages
from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from evpay.audit import Actor
from evpay.models import JobRun
from evpay.money import to_decimal_string
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.templatetags.evpay_tags import brand_name
from evpay.web import (
    CSV_FLAVOURS,
    PAGE_SIZE,
    after_post,
    can_operate,
    check_date_range,
    csv_response,
    date_param,
    error_slots,
    fragment_etag,
    not_modified,
    paginate,
    parse_uuid,
    querystring,
    render_page,
    tag_fragment,
)
from terminals import closing_calendar, gateway, services, tasks, uptime
from terminals.models import (
    NOT_ONLINE_STATUSES,
    ClosingBrandTotal,
    MifareRead,
    PeriodClosing,
    Site,
    Terminal,
    TerminalBrand,
    TerminalStatus,
)
from terminals.opi.profile import Operation, ProfileError

# A row changed this long before the cursor is sent again: a status written just before a
# poll but committed just after it would otherwise be missed. Re-sending a row is harmless.
CURSOR_OVERLAP = timedelta(seconds=5)
HTMX_STOP_POLLING = 286


def _terminal_queryset(params):
    qs = Terminal.objects.select_related("site").prefetch_related(
        Prefetch("brands", queryset=TerminalBrand.objects.only("terminal_id", "code"))
    )
    site = params.get("site")
    if site:
        qs = qs.filter(site__public_id=site) if parse_uuid(site) else qs.none()
    status = params.get("status")
    if status == "online":
        qs = qs.exclude(status__in=NOT_ONLINE_STATUSES)
    elif status in TerminalStatus.values:
        qs = qs.filter(status=status)
    brand = (params.get("brand") or "").strip().upper()
    if brand:
        qs = qs.filter(brands__code=brand)
    q = (params.get("q") or "").strip()
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(terminal_id__icontains=q))
    return qs


def _cursor(now=None) -> str:
    return ((now or timezone.now()) - CURSOR_OVERLAP).isoformat()


@permission_required(VIEW_PERM)
@require_GET
def terminal_list(request):
    qs = _terminal_queryset(request.GET)
    since = request.GET.get("since")
    if since is not None:
        # The live poll: only rows whose status changed since the cursor, swapped by id.
        cursor = parse_datetime(since.replace(" ", "+"))
        if cursor is None:
            return HttpResponse("bad cursor", status=400)
        if timezone.is_naive(cursor):
            cursor = timezone.make_aware(cursor)
        # Only the rows of the page being looked at (it sends its page number): "last seen"
        # moves on every status poll, so the whole fleet would otherwise come back each time.
        try:
            number = max(int(request.GET.get("page", 1)), 1)
        except ValueError:
            number = 1
        # Sliced rather than paginated: the poll needs no count. Only the times first.
        times = qs.values_list("pk", "status_changed_at", "last_seen_at")
        changed_ids = [
            pk
            for pk, changed_at, seen_at in times[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
            if (changed_at and changed_at > cursor) or (seen_at and seen_at > cursor)
        ]
        if not changed_ids:
            # Nothing on this page changed: 204, htmx swaps nothing and the poller asks again
            # with the cursor it has (issue 19, P4: most polls of 200 tabs are these).
            return tag_fragment(HttpResponse(status=204), None)
        changed = list(qs.filter(pk__in=changed_ids))
        context = {
            "changed": changed,
            "cursor": _cursor(),
            "params": querystring(request, drop=("since",)),
        }
        return render(request, "terminals/list.html#changes", context)
    codes = TerminalBrand.objects.order_by("code").values_list("code", flat=True).distinct()
    brands = sorted(((c, brand_name(c)) for c in codes), key=lambda choice: choice[1].lower())
    context = {
        "page": paginate(request, qs),
        "sites": Site.objects.only("public_id", "name"),
        "statuses": [("online", _("Online (any)")), *TerminalStatus.choices],
        "brands": brands,
        "cursor": _cursor(),
        "params": querystring(request, drop=("since",)),
    }
    return render_page(request, "terminals/list.html", context, partial="results")


def _get_terminal(public_id) -> Terminal:
    return get_object_or_404(Terminal.objects.select_related("site"), public_id=public_id)


# The jobs whose results the terminal page's panels show (JobRun.kind, subject: terminal id).
PANEL_JOBS = ("brands", "closing")


def _panels_stamp(terminal, runs=None, closings=None) -> str:
    """A short fingerprint of what the brands and closings panels show: the brand refresh,
    the latest runs of their jobs (a failed run changes nothing else) and the latest closings.
    The page passes the rows it shows (one query each, not two); the poll reads only these."""
    if runs is None:
        runs = _panel_runs(terminal).values_list("pk", "outcome")
    else:
        runs = [(r.pk, r.outcome) for r in runs]
    if closings is None:
        closings = terminal.closings.values_list("pk", "state")[:10]
    else:
        closings = [(c.pk, c.state) for c in closings]
    parts = repr((terminal.brands_refreshed_at, list(runs), list(closings)))
    return hashlib.blake2s(parts.encode(), digest_size=8).hexdigest()


def _panel_runs(terminal):
    return JobRun.objects.filter(subject=terminal.terminal_id, kind__in=PANEL_JOBS).order_by("-pk")[
        :10
    ]


def _status(request, terminal):
    """The polled status. Like the session page's summary it also says when the panels are
    out of date: the page sends the stamp of what they show, and a different one here fires
    `terminal-changed`, which makes them fetch themselves. So brands and closings show
    a job's result when it finishes, without a reload, and the 5 s poll stays cheap: when
    nothing it shows changed it is a 304, not rendered (evpay.web.fragment_etag)."""
    ocpp_connectors = _ocpp_connectors(terminal)
    seen = request.GET.get("seen")
    stale = seen is not None and seen != _panels_stamp(terminal)
    # Panels out of date: a 200 every time, so its HX-Trigger repeats until they refetched
    # (they skip it while a re-run reason is typed).
    etag = None
    if not stale:
        etag = fragment_etag(
            "terminals/detail.html",
            terminal.public_id,
            terminal.status,
            terminal.status_changed_at,
            terminal.last_seen_at,
            terminal.consecutive_failures,
            terminal.enabled,
            terminal.site.time_zone,
            seen,
            _ocpp_fingerprint(ocpp_connectors),
        )
        if response := not_modified(request, etag):
            return response
    context = {"terminal": terminal, "ocpp_connectors": ocpp_connectors}
    response = render(request, "terminals/detail.html#status", context)
    if stale:
        response["HX-Trigger"] = "terminal-changed"
    return tag_fragment(response, etag)


def _ocpp_connectors(terminal, connectors=None) -> list:
    """The terminal's connectors on OCPP chargers, for the live status line (polled)."""
    if connectors is None:
        connectors = terminal.connectors.filter(charge_point__isnull=False)
        connectors = connectors.select_related("charge_point")
    return [c for c in connectors if c.charge_point_id]


def _ocpp_fingerprint(ocpp_connectors) -> list:
    """What the status line shows of each charger: part of the poll's ETag, so a charger that
    connects, reports a status or sends a message is a 200, not a 304."""
    return [
        (
            c.pk,
            c.ocpp_status,
            c.charge_point.connected,
            c.charge_point.last_message_at,
            c.charge_point.firmware_version,
            c.charge_point.ocpp_version,
        )
        for c in ocpp_connectors
    ]


def _latest_runs(runs) -> dict:
    """kind -> the latest JobRun of the panel jobs, to say "running" or why it failed."""
    latest = {}
    for run in runs:
        latest.setdefault(run.kind, run)
    return latest


# What the terminal page's tables show: the latest closings, status changes, transactions.
CLOSINGS_SHOWN, HISTORY_SHOWN, TRANSACTIONS_SHOWN = 10, 20, 20


@permission_required(VIEW_PERM)
@require_GET
def terminal_detail(request, public_id):
    """The page keeps to ten queries (issue 19): three are the login's (session, user, its
    permissions), one each reads the terminal and its panels; the recent transactions come
    after it, from their own fragment (`_transactions`)."""
    terminal = _get_terminal(public_id)
    part = request.GET.get("part") if request.htmx else None
    if part == "status":
        return _status(request, terminal)
    if part == "transactions":
        return _transactions(request, terminal)
    runs = list(_panel_runs(terminal))
    closings, closing_today = services.recent_closings(terminal, CLOSINGS_SHOWN)
    context = {
        "terminal": terminal,
        "site": terminal.site,
        "brands": terminal.brands.all(),
        "closings": closings,
        # Running or done today: the page offers an explicit "Run again" instead.
        "closing_today": closing_today,
        "runs": _latest_runs(runs),
        "stamp": _panels_stamp(terminal, runs, closings),
        "can_operate": can_operate(request.user),
    }
    if part == "panels":
        return render(request, "terminals/detail.html#panels", context)
    connectors = list(terminal.connectors.select_related("charge_point"))
    # The status history table comes with the uptime chart's read of the same rows.
    figures = uptime.terminal_uptime(terminal, history=HISTORY_SHOWN)
    context |= {
        "history": figures["history"],
        "connectors": connectors,
        "ocpp_connectors": _ocpp_connectors(terminal, connectors),
        "uptime": figures,
    } | _mifare_context(terminal, terminal.mifare_reads.select_related("requested_by").first())
    return render(request, "terminals/detail.html", context)


def _transactions(request, terminal):
    """The recent transactions, which the page asks for once it is shown (hx-trigger="load"):
    the charging app's request rows, through their foreign key to the terminal, and its
    biggest table, read after the rest of the page rather than before it."""
    transactions = terminal.transactions.select_related("session").order_by("-created_at", "-id")
    context = {
        "terminal": terminal,
        "site": terminal.site,
        "transactions": transactions[:TRANSACTIONS_SHOWN],
    }
    return render(request, "terminals/detail.html#transactions", context)


# action -> (task, message)
ACTIONS = {
    "status": (tasks.poll_terminal_status_task, gettext_lazy("Status refresh requested.")),
    "brands": (tasks.refresh_brands_task, gettext_lazy("Card brand refresh requested.")),
    "closing": (
        tasks.run_closing_task,
        gettext_lazy("Period closing started; it appears under Closings."),
    ),
    "reprint": (tasks.reprint_ticket_task, gettext_lazy("Ticket reprint requested.")),
}


@permission_required(OPERATE_PERM)
@require_POST
def terminal_action(request, public_id, action):
    if action not in ACTIONS:
        raise Http404("unknown action")
    terminal = _get_terminal(public_id)
    task, message = ACTIONS[action]
    args = [terminal.pk]
    if action in ("closing", "brands"):
        args.append(f"user:{request.user.get_username()}")
    detail = reverse("terminals:detail", args=[terminal.public_id])
    with transaction.atomic():
        if action == "closing":
            # One closing per terminal and business date: a click while one runs, or after it
            # is done, is refused; running it again is explicit, with a reason (audited).
            reason = request.POST.get("reason", "")
            try:
                rerun_of = services.request_closing(
                    terminal,
                    Actor.user(request.user),
                    rerun=request.POST.get("rerun") == "1",
                    reason=reason,
                )
            except services.ClosingRefused as exc:
                messages.warning(request, str(exc))
                return after_post(request, detail)
            if rerun_of is not None:
                args += [rerun_of.pk, reason.strip()]
                message = _("Period closing started again; it appears under Closings.")
        # Enqueue after commit so the worker sees what this request wrote (a re-run's audit).
        transaction.on_commit(lambda: task.delay(*args))
    messages.success(request, message)
    return after_post(request, detail)


def _mifare_context(terminal, read) -> dict:
    """The Mifare panel says how long the terminal waits for a card: its profile's timeout."""
    try:
        wait = round(gateway.timeout_for(terminal, Operation.MIFARE_UID))
    except ProfileError:
        wait = None  # the read fails with the profile's message; no number to promise
    return {"mifare": read, "terminal": terminal, "mifare_wait": wait}


@permission_required(OPERATE_PERM)
@require_POST
def mifare_start(request, public_id):
    terminal = _get_terminal(public_id)
    # A second click while a read waits for a card reuses it rather than queueing another.
    read = (
        MifareRead.objects.filter(
            terminal=terminal,
            state=MifareRead.State.PENDING,
            requested_at__gte=timezone.now() - timedelta(minutes=1),
        )
        .order_by("-requested_at")
        .first()
    )
    if read is None:
        with transaction.atomic():
            read = MifareRead.objects.create(terminal=terminal, requested_by=request.user)
            transaction.on_commit(lambda: tasks.read_mifare_task.delay(read.pk))
    if request.htmx:
        return render(request, "terminals/detail.html#mifare", _mifare_context(terminal, read))
    messages.info(request, _("Present the card at the terminal."))
    return after_post(request, reverse("terminals:detail", args=[terminal.public_id]))


@permission_required(VIEW_PERM)
@require_GET
def mifare_status(request, read_id):
    read = get_object_or_404(MifareRead.objects.select_related("terminal"), public_id=read_id)
    context = _mifare_context(read.terminal, read)
    if not request.htmx:
        return render(request, "terminals/mifare.html", context)
    # 286 tells htmx to swap this last answer and stop polling.
    status = 200 if read.state == MifareRead.State.PENDING else HTMX_STOP_POLLING
    return render(request, "terminals/detail.html#mifare", context, status=status)


# --------------------------------------------------------------------------- closings


CLOSING_FILTER_FIELDS = {"from": "f-from", "to": "f-to"}


def _closing_queryset(params, errors: dict):
    """The filtered closings; a filter value that is not valid puts its message in `errors`."""
    qs = PeriodClosing.objects.select_related("terminal__site")
    terminal = params.get("terminal")
    if terminal:
        qs = qs.filter(terminal__public_id=terminal) if parse_uuid(terminal) else qs.none()
    site = params.get("site")
    if site:
        qs = qs.filter(terminal__site__public_id=site) if parse_uuid(site) else qs.none()
    if params.get("state") in PeriodClosing.State.values:
        qs = qs.filter(state=params["state"])
    date_from, date_to = date_param(params, "from", errors), date_param(params, "to", errors)
    check_date_range(errors, date_from, date_to)
    if date_from:
        qs = qs.filter(business_date__gte=date_from)
    if date_to:
        qs = qs.filter(business_date__lte=date_to)
    return qs


CLOSING_CSV_HEADER = [
    "business_date",
    "terminal_id",
    "terminal",
    "site",
    "state",
    "brand",
    "currency",
    "terminal_count",
    "terminal_amount",
    "our_count",
    "our_amount",
    "difference",
    "matches",
]


def _closing_csv_rows(totals, flavour=CSV_FLAVOURS["csv"]):
    number = flavour.number
    for t in totals:
        closing = t.closing
        yield [
            closing.business_date.isoformat(),
            closing.terminal.terminal_id,
            closing.terminal.name,
            closing.terminal.site.name,
            closing.state,
            t.brand,
            t.currency,
            t.terminal_count,
            number(to_decimal_string(t.terminal_amount_minor, t.currency)),
            t.our_count,
            number(to_decimal_string(t.our_amount_minor, t.currency)),
            number(to_decimal_string(t.amount_difference_minor, t.currency)),
            "yes" if t.matches else "no",
        ]


# Closings carry business dates, no times: a plain CSV and the Dutch Excel one.
CLOSING_CSV_FORMATS = ("csv", "csv-excel-nl")


def _closing_csv_flavour(request):
    key = request.GET.get("format", "")
    return CSV_FLAVOURS[key] if key in CLOSING_CSV_FORMATS else None


@permission_required(VIEW_PERM)
@require_GET
def closing_list(request):
    errors: dict[str, str] = {}
    qs = _closing_queryset(request.GET, errors)
    flavour = _closing_csv_flavour(request)
    if flavour:
        totals = (
            ClosingBrandTotal.objects.filter(closing__in=qs.values("pk"))
            .select_related("closing__terminal__site")
            .order_by("-closing__business_date", "closing__terminal__terminal_id", "brand")
        )
        return csv_response(
            f"closings{flavour.suffix}.csv",
            CLOSING_CSV_HEADER,
            _closing_csv_rows(totals.iterator(), flavour),
            flavour,
        )
    page = paginate(request, qs.prefetch_related("totals"))
    context = {
        "page": page,
        "terminals": Terminal.objects.select_related("site").only(
            "public_id", "name", "terminal_id", "site__name"
        ),
        "states": PeriodClosing.State.choices,
        "errors": errors,
        "error_slots": error_slots(errors, CLOSING_FILTER_FIELDS),
        "csv_query": querystring(request, format="csv"),
        "excel_query": querystring(request, format="csv-excel-nl"),
    }
    if not request.htmx or request.htmx.boosted:  # the filter fragment: the table only
        context["calendar"] = closing_calendar.month_calendars(request.GET)
    return render_page(request, "terminals/closings.html", context, partial="results")


@permission_required(VIEW_PERM)
@require_GET
def closing_detail(request, public_id):
    closing = get_object_or_404(
        PeriodClosing.objects.select_related("terminal__site"), public_id=public_id
    )
    totals = list(closing.totals.all())
    flavour = _closing_csv_flavour(request)
    if flavour:
        for t in totals:
            t.closing = closing
        return csv_response(
            f"closing-{closing.terminal.terminal_id}-{closing.business_date}{flavour.suffix}.csv",
            CLOSING_CSV_HEADER,
            _closing_csv_rows(totals, flavour),
            flavour,
        )
    brand = request.GET.get("brand")
    drill = None
    if brand:
        ids = [i for t in totals if t.brand == brand for i in t.transaction_ids]
        drill = (
            closing.terminal.transactions.filter(pk__in=[i for i in ids if str(i).isdigit()])
            .select_related("session")
            .order_by("created_at")
        )
    context = {
        "closing": closing,
        "site": closing.terminal.site,
        "totals": totals,
        "brand": brand,
        "drill": drill,
    }
    return render_page(request, "terminals/closing_detail.html", context, partial="drill")
