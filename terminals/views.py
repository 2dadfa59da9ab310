"""Terminal fleet pages: list with live badges, detail with actions, period closings."""

from datetime import timedelta

from django.contrib import messages
from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from evpay.money import to_decimal_string
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.web import (
    after_post,
    can_operate,
    csv_response,
    paginate,
    parse_date,
    parse_uuid,
    querystring,
    render_page,
)
from terminals import tasks
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
        changed = qs.filter(status_changed_at__gt=cursor)[:200]
        context = {
            "changed": changed,
            "cursor": _cursor(),
            "params": querystring(request, drop=("page", "since")),
        }
        return render(request, "terminals/list.html#changes", context)
    brands = TerminalBrand.objects.order_by("code").values_list("code", flat=True).distinct()
    context = {
        "page": paginate(request, qs),
        "sites": Site.objects.only("public_id", "name"),
        "statuses": [("online", "Online (any)"), *TerminalStatus.choices],
        "brands": brands,
        "cursor": _cursor(),
        "params": querystring(request, drop=("page", "since")),
    }
    return render_page(request, "terminals/list.html", context, partial="results")


def _get_terminal(public_id) -> Terminal:
    return get_object_or_404(Terminal.objects.select_related("site"), public_id=public_id)


@permission_required(VIEW_PERM)
@require_GET
def terminal_detail(request, public_id):
    terminal = _get_terminal(public_id)
    if request.htmx and request.GET.get("part") == "status":
        return render(request, "terminals/detail.html#status", {"terminal": terminal})
    context = {
        "terminal": terminal,
        "site": terminal.site,
        "history": terminal.status_changes.all()[:20],
        "brands": terminal.brands.all(),
        "connectors": terminal.connectors.all(),
        # The charging app's request rows, through their foreign key to the terminal.
        "transactions": terminal.transactions.select_related("session").order_by(
            "-created_at", "-id"
        )[:20],
        "closings": terminal.closings.all()[:10],
        "mifare": terminal.mifare_reads.select_related("requested_by").first(),
        "can_operate": can_operate(request.user),
    }
    return render(request, "terminals/detail.html", context)


# action -> (task, message)
ACTIONS = {
    "status": (tasks.poll_terminal_status_task, "Status refresh requested."),
    "brands": (tasks.refresh_brands_task, "Card brand refresh requested."),
    "closing": (tasks.run_closing_task, "Period closing started; it appears under Closings."),
    "reprint": (tasks.reprint_ticket_task, "Ticket reprint requested."),
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
    # Enqueue after commit so the worker sees what this request wrote (nothing, today).
    transaction.on_commit(lambda: task.delay(*args))
    messages.success(request, message)
    return after_post(request, reverse("terminals:detail", args=[terminal.public_id]))


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
        return render(
            request, "terminals/detail.html#mifare", {"mifare": read, "terminal": terminal}
        )
    messages.info(request, "Present the card at the terminal.")
    return after_post(request, reverse("terminals:detail", args=[terminal.public_id]))


@permission_required(VIEW_PERM)
@require_GET
def mifare_status(request, read_id):
    read = get_object_or_404(MifareRead.objects.select_related("terminal"), public_id=read_id)
    context = {"mifare": read, "terminal": read.terminal}
    if not request.htmx:
        return render(request, "terminals/mifare.html", context)
    # 286 tells htmx to swap this last answer and stop polling.
    status = 200 if read.state == MifareRead.State.PENDING else HTMX_STOP_POLLING
    return render(request, "terminals/detail.html#mifare", context, status=status)


# --------------------------------------------------------------------------- closings


def _closing_queryset(params):
    qs = PeriodClosing.objects.select_related("terminal__site")
    terminal = params.get("terminal")
    if terminal:
        qs = qs.filter(terminal__public_id=terminal) if parse_uuid(terminal) else qs.none()
    site = params.get("site")
    if site:
        qs = qs.filter(terminal__site__public_id=site) if parse_uuid(site) else qs.none()
    if params.get("state") in PeriodClosing.State.values:
        qs = qs.filter(state=params["state"])
    date_from, date_to = parse_date(params.get("from")), parse_date(params.get("to"))
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


def _closing_csv_rows(totals):
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
            to_decimal_string(t.terminal_amount_minor, t.currency),
            t.our_count,
            to_decimal_string(t.our_amount_minor, t.currency),
            to_decimal_string(t.amount_difference_minor, t.currency),
            "yes" if t.matches else "no",
        ]


@permission_required(VIEW_PERM)
@require_GET
def closing_list(request):
    qs = _closing_queryset(request.GET)
    if request.GET.get("format") == "csv":
        totals = (
            ClosingBrandTotal.objects.filter(closing__in=qs.values("pk"))
            .select_related("closing__terminal__site")
            .order_by("-closing__business_date", "closing__terminal__terminal_id", "brand")
        )
        return csv_response(
            "closings.csv", CLOSING_CSV_HEADER, _closing_csv_rows(totals.iterator())
        )
    page = paginate(request, qs.prefetch_related("totals"))
    context = {
        "page": page,
        "terminals": Terminal.objects.select_related("site").only(
            "public_id", "name", "terminal_id", "site__name"
        ),
        "states": PeriodClosing.State.choices,
        "csv_query": querystring(request, format="csv"),
    }
    return render_page(request, "terminals/closings.html", context, partial="results")


@permission_required(VIEW_PERM)
@require_GET
def closing_detail(request, public_id):
    closing = get_object_or_404(
        PeriodClosing.objects.select_related("terminal__site"), public_id=public_id
    )
    totals = list(closing.totals.all())
    if request.GET.get("format") == "csv":
        for t in totals:
            t.closing = closing
        return csv_response(
            f"closing-{closing.terminal.terminal_id}-{closing.business_date}.csv",
            CLOSING_CSV_HEADER,
            _closing_csv_rows(totals),
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
