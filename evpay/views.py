"""Overview, exceptions queue and job runs; plus the small helpers every dashboard view uses."""

import csv
import uuid
from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from evpay import exceptions as exception_service
from evpay.models import ExceptionRecord, JobRun
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required

PAGE_SIZE = 50

# --------------------------------------------------------------------------- helpers


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
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = ""
    target = target or fallback
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Location"] = target
        return response
    return redirect(target)


class _Echo:
    def write(self, value):
        return value


def csv_response(filename: str, header: list[str], rows) -> StreamingHttpResponse:
    """Stream a CSV (rows is any iterable, e.g. a queryset .iterator())."""
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(header)
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
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        return None


def parse_uuid(value) -> uuid.UUID | None:
    """A UUID from a query parameter, or None when it is not one (filters then match nothing)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def start_of_day(day, tz=None):
    return timezone.make_aware(datetime.combine(day, time.min), tz)


def can_operate(user) -> bool:
    return user.has_perm(OPERATE_PERM)


# --------------------------------------------------------------------------- overview


def overview_context() -> dict:
    from sessions.models import OPEN_STATES, ChargingSession, SessionState
    from terminals.models import OFFLINE_STATUSES, PeriodClosing, Terminal

    terminals = Terminal.objects.filter(enabled=True).aggregate(
        total=Count("id"),
        offline=Count("id", filter=Q(status__in=OFFLINE_STATUSES)),
    )
    terminals["online"] = terminals["total"] - terminals["offline"]

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
