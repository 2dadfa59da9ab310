"""Overview, exceptions queue and job runs: the pages that look across the apps."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from evpay import exceptions as exception_service
from evpay.models import ExceptionRecord, JobRun
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.web import after_post, can_operate, paginate, render_page, start_of_day
from sessions.models import OPEN_STATES, ChargingSession, SessionState
from terminals.models import PeriodClosing, Terminal, TerminalStatus

# --------------------------------------------------------------------------- overview


def overview_context() -> dict:
    terminals = Terminal.objects.filter(enabled=True).aggregate(
        total=Count("id"),
        offline=Count("id", filter=Q(status=TerminalStatus.OFFLINE)),
        # Not polled yet (or a state we cannot map): neither online nor offline.
        unknown=Count("id", filter=Q(status=TerminalStatus.UNKNOWN)),
    )
    terminals["online"] = terminals["total"] - terminals["offline"] - terminals["unknown"]

    sessions = ChargingSession.objects.filter(state__in=OPEN_STATES).aggregate(
        open=Count("id"), charging=Count("id", filter=Q(state=SessionState.CHARGING))
    )

    # "Today" is the server's day (settings.TIME_ZONE); sites in other zones differ a little.
    today_start = start_of_day(timezone.localdate())
    captured = list(
        ChargingSession.objects.filter(closed_at__gte=today_start, captured_amount_minor__gt=0)
        .values("currency")
        .annotate(amount=Sum("captured_amount_minor"), count=Count("id"))
        .order_by("currency")
    )

    by_severity = dict(
        ExceptionRecord.objects.filter(resolved_at__isnull=True)
        .values_list("severity")
        .annotate(n=Count("id"))
        .values_list("severity", "n")
    )
    exceptions = [
        {"severity": sev, "label": sev.label, "count": by_severity.get(sev.value, 0)}
        for sev in reversed(ExceptionRecord.Severity)
    ]
    closings = PeriodClosing.objects.select_related("terminal__site")[:8]
    return {
        "terminals": terminals,
        "sessions": sessions,
        "captured": captured,
        "exceptions": exceptions,
        "closings": closings,
        "generated_at": timezone.now(),
    }


@permission_required(VIEW_PERM)
@require_GET
def overview(request):
    return render_page(request, "overview.html", overview_context(), partial="live")


# --------------------------------------------------------------------------- exceptions

EXCEPTION_STATUSES = {"open": "Unresolved", "resolved": "Resolved", "all": "All"}


def _exception_queryset(params):
    qs = ExceptionRecord.objects.select_related("resolved_by")
    status = params.get("status") or "open"
    if status == "open":
        qs = qs.filter(resolved_at__isnull=True)
    elif status == "resolved":
        qs = qs.filter(resolved_at__isnull=False)
    if params.get("kind") in ExceptionRecord.Kind.values:
        qs = qs.filter(kind=params["kind"])
    severity = params.get("severity")
    if severity and severity.isdigit() and int(severity) in ExceptionRecord.Severity.values:
        qs = qs.filter(severity=int(severity))
    # Unresolved first, then most severe, then newest.
    return qs.order_by(F("resolved_at").desc(nulls_first=True), "-severity", "-created_at")


@permission_required(VIEW_PERM)
@require_GET
def exceptions(request):
    page = paginate(request, _exception_queryset(request.GET))
    context = {
        "page": page,
        "status": request.GET.get("status") or "open",
        "statuses": EXCEPTION_STATUSES,
        "kinds": ExceptionRecord.Kind.choices,
        "severities": ExceptionRecord.Severity.choices,
        "can_operate": can_operate(request.user),
    }
    return render_page(request, "exceptions.html", context, partial="results")


def _exception_row(request, record, status=200):
    record.refresh_from_db()
    context = {"record": record, "can_operate": True, "oob_messages": True}
    return render(request, "exceptions.html#row", context, status=status)


@permission_required(OPERATE_PERM)
@require_POST
def exception_resolve(request, public_id):
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    note = request.POST.get("note", "").strip()
    if not note:
        messages.error(request, "A note is required to resolve an exception.")
        status = 400
    else:
        if exception_service.resolve_exception(record, request.user, note):
            messages.success(request, f"Resolved: {record.title}")
        else:
            messages.info(request, "This exception was already resolved.")
        status = 200
    if request.htmx:
        return _exception_row(request, record, status)
    return after_post(request, reverse("exceptions"))


@permission_required(OPERATE_PERM)
@require_POST
def exception_retry(request, public_id):
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    if record.resolved_at is not None:
        messages.info(request, "This exception is already resolved; nothing to retry.")
    else:
        try:
            with transaction.atomic():
                exception_service.retry_exception(record, request.user)
        except (ValueError, LookupError) as exc:
            messages.error(request, f"Cannot retry: {exc}")
        else:
            messages.success(request, "Retry enqueued; the result appears here when it finishes.")
    if request.htmx:
        return _exception_row(request, record)
    return after_post(request, reverse("exceptions"))


# --------------------------------------------------------------------------- job runs


@permission_required(VIEW_PERM)
@require_GET
def job_runs(request):
    qs = JobRun.objects.all()
    kind = request.GET.get("kind") or ""
    if kind:
        qs = qs.filter(kind=kind)
    outcome = request.GET.get("outcome") or ""
    if outcome in JobRun.Outcome.values:
        qs = qs.filter(outcome=outcome)
    kinds = sorted(JobRun.objects.order_by().values_list("kind", flat=True).distinct())
    context = {
        "page": paginate(request, qs),
        "kinds": kinds,
        "kind": kind,
        "outcome": outcome,
        "outcomes": JobRun.Outcome.choices,
    }
    return render_page(request, "job_runs.html", context, partial="results")


# --------------------------------------------------------------------------- auth


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


def permission_denied(request, exception=None):
    message = str(exception) if exception and str(exception) else "You do not have access to this."
    return render(request, "403.html", {"message": message}, status=403)
