"""Overview, exceptions queue and job runs: the pages that look across the apps."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from evpay import audit, charts
from evpay import exceptions as exception_service
from evpay.models import ExceptionRecord, JobRun
from evpay.roles import OPERATE_PERM, VIEW_PERM, permission_required
from evpay.web import (
    after_post,
    can_operate,
    fragment_etag,
    not_modified,
    paginate,
    querystring,
    render_page,
    start_of_day,
    tag_fragment,
)
from sessions import stats as session_stats
from sessions import views as session_views
from sessions.models import OPEN_STATES, ChargingSession, SessionState, TerminalTransaction
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
    context = overview_context()
    if not request.htmx or request.htmx.boosted:  # the live poll: counters only
        context["figures"] = payment_figures(request.GET.get("range", ""))
        return render(request, "overview.html", context)
    context["closings"] = list(context["closings"])
    # The figures as shown, and the "Updated" time to the minute it shows: an unchanged
    # overview is a 304, not rendered (evpay.web.fragment_etag).
    etag = fragment_etag(
        "overview.html",
        context["terminals"],
        context["sessions"],
        context["captured"],
        [(row["severity"].value, row["count"]) for row in context["exceptions"]],
        [
            (c.public_id, c.business_date, c.state, c.period_end, c.terminal.name)
            + (c.terminal.site.name, c.terminal.site.time_zone)
            for c in context["closings"]
        ],
        timezone.localtime(context["generated_at"]).strftime("%Y-%m-%d %H:%M"),
    )
    if response := not_modified(request, etag):
        return response
    return tag_fragment(render(request, "overview.html#live", context), etag)


def payment_figures(preset: str) -> dict:
    """The overview's charts for a date preset, in days of the operator's default zone
    (settings.TIME_ZONE): the zone the sessions list's from/to filters use, so a bar's
    link lists that bar's sessions even when sites are in several zones."""
    tz = timezone.get_current_timezone()
    key, first, last = charts.preset_days(preset, timezone.localdate())
    figures = session_stats.daily_payments(first, last, tz)
    return figures | {"preset": key, "presets": charts.PRESETS, "time_zone": str(tz)}


# --------------------------------------------------------------------------- exceptions

EXCEPTION_STATUSES = {
    "open": gettext_lazy("Unresolved"),
    "resolved": gettext_lazy("Resolved"),
    "all": gettext_lazy("All"),
}


def _exception_queryset(params):
    qs = ExceptionRecord.objects.select_related("resolved_by", "assignee")
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


# The session page's actions offered on an exception about a session (resolving the session
# stays on its page, where the whole story is).
QUEUE_SESSION_ACTIONS = ("capture", "release", "retry")
TX_SUBJECT = TerminalTransaction._meta.label_lower


def _attach_session_actions(records) -> None:
    """Give each open exception about a session `session_actions`: the forms the session page
    would offer for it now (same table, same availability). Two queries for the whole page."""
    refs = {r.session_ref for r in records if r.session_ref and r.is_open}
    sessions = {}
    pending = set()
    if refs:
        sessions = {s.public_id: s for s in ChargingSession.objects.filter(public_id__in=refs)}
        pending = set(
            TerminalTransaction.objects.filter(
                session__in=sessions.values(), state__in=session_views.PENDING_TX_STATES
            ).values_list("session_id", flat=True)
        )
    for record in records:
        session = sessions.get(record.session_ref)
        record.session_actions = []
        if session is not None and record.is_open:
            keys = session_views.available_actions(session, session.pk in pending)
            if record.subject_type == TX_SUBJECT:
                keys.discard("retry")  # the row's own retry already names this request
            record.session_actions = session_views.action_forms(
                session,
                keys & set(QUEUE_SESSION_ACTIONS),
                url=lambda key, r=record: reverse(
                    "exception_session_action", args=[r.public_id, key]
                ),
            )


@permission_required(VIEW_PERM)
@require_GET
def exceptions(request):
    page = paginate(request, _exception_queryset(request.GET))
    operate = can_operate(request.user)
    if operate:
        page.object_list = list(page.object_list)  # the rows the template will show
        _attach_session_actions(page.object_list)
    context = {
        "page": page,
        "status": request.GET.get("status") or "open",
        "statuses": EXCEPTION_STATUSES,
        "kinds": ExceptionRecord.Kind.choices,
        "severities": ExceptionRecord.Severity.choices,
        "can_operate": operate,
        "poll_query": querystring(request, drop=()),
    }
    return render_page(request, "exceptions.html", context, partial="results")


def _exception_row(request, record, status=200):
    record.refresh_from_db()
    _attach_session_actions([record])
    context = {"record": record, "can_operate": True, "oob_messages": True}
    return render(request, "exceptions.html#row", context, status=status)


def _after_row_post(request, record, status=200):
    if request.htmx:
        return _exception_row(request, record, status)
    return after_post(request, reverse("exceptions"))


@permission_required(OPERATE_PERM)
@require_POST
def exception_resolve(request, public_id):
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    note = request.POST.get("note", "").strip()
    if not note:
        messages.error(request, _("A note is required to resolve an exception."))
        status = 400
    else:
        if exception_service.resolve_exception(record, request.user, note):
            messages.success(request, _("Resolved: %(title)s") % {"title": record.title})
        else:
            messages.info(request, _("This exception was already resolved."))
        status = 200
    return _after_row_post(request, record, status)


@permission_required(OPERATE_PERM)
@require_POST
def exception_retry(request, public_id):
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    if record.resolved_at is not None:
        messages.info(request, _("This exception is already resolved; nothing to retry."))
    else:
        try:
            with transaction.atomic():
                exception_service.retry_exception(record, request.user)
        except (ValueError, LookupError) as exc:
            messages.error(request, _("Cannot retry: %(reason)s") % {"reason": exc})
        else:
            messages.success(
                request, _("Retry enqueued; the result appears here when it finishes.")
            )
    return _after_row_post(request, record)


@permission_required(OPERATE_PERM)
@require_POST
def exception_session_action(request, public_id, action):
    """Capture, release or retry the exception's session from the queue: the session page's
    action (sessions.views.perform_action: same service, guards and required reason)."""
    if action not in QUEUE_SESSION_ACTIONS:
        raise Http404("unknown action")
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    if record.session_ref is None:
        raise Http404("this exception is not about a session")
    session = get_object_or_404(
        ChargingSession.objects.select_related("site", "terminal"), public_id=record.session_ref
    )
    if record.resolved_at is not None:
        messages.info(request, _("This exception is already resolved; act on the session's page."))
    else:
        session_views.perform_action(
            request, session, action, _("this list updates when the terminal answers.")
        )
    return _after_row_post(request, record)


@permission_required(OPERATE_PERM)
@require_POST
def exception_assign(request, public_id):
    """Assign to me (to=me) or unassign (to empty): who works on it, audited."""
    record = get_object_or_404(ExceptionRecord, public_id=public_id)
    assignee = request.user if request.POST.get("to") == "me" else None
    with transaction.atomic():
        # Locked so that two operators taking it at once audit one change after the other.
        current = ExceptionRecord.objects.select_for_update().get(pk=record.pk)
        if current.resolved_at is not None:
            messages.info(
                request, _("This exception is already resolved; nobody needs to take it.")
            )
        elif current.assignee_id == getattr(assignee, "pk", None):
            # A repeat (double click, two tabs): nothing changes, nothing is audited.
            messages.info(
                request, _("It is already yours.") if assignee else _("It is already unassigned.")
            )
        else:
            before = current.assignee.get_username() if current.assignee else ""
            after = assignee.get_username() if assignee else ""
            current.assignee = assignee
            current.save(update_fields=["assignee", "updated_at"])
            audit.record(
                audit.Actor.user(request.user),
                current,
                "exception.assigned" if assignee else "exception.unassigned",
                reason=f"assigned to {after}" if assignee else f"unassigned from {before}",
                data={"from": before, "to": after},
            )
            messages.success(
                request,
                _("Assigned to you: %(title)s") % {"title": current.title}
                if assignee
                else _("Unassigned."),
            )
    return _after_row_post(request, record)


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


class LoginForm(AuthenticationForm):
    """Django's form sets the username's max_length without a validator, so a username of
    any length reached authenticate() and django-axes' failed-attempt row (varchar 255): a
    500 on PostgreSQL. Too long is now a form error, before any attempt is recorded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["username"]
        field.validators.append(MaxLengthValidator(field.max_length))


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True
    authentication_form = LoginForm


def permission_denied(request, exception=None):
    message = (
        str(exception) if exception and str(exception) else _("You do not have access to this.")
    )
    return render(request, "403.html", {"message": message}, status=403)
