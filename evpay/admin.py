from functools import update_wrapper

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import resolve_url
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache

from evpay.models import AuditEvent, ExceptionRecord, Heartbeat, JobRun
from evpay.roles import CONFIGURE_PERM
from evpay.security import otp_step_needed

NO_ADMIN_ACCESS = gettext_lazy("The Django admin is for the admin role only.")


class EvpayAdminSite(admin.AdminSite):
    site_header = gettext_lazy("evpay administration")
    site_title = gettext_lazy("evpay admin")
    index_title = gettext_lazy("Configuration and raw data")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # This module defines the site class, so it is imported while admin.site is being
        # built: @admin.register here would reach a half-made site. Register on self instead.
        self.register(AuditEvent, AuditEventAdmin)
        self.register(ExceptionRecord, ExceptionRecordAdmin)
        self.register(JobRun, JobRunAdmin)
        self.register(Heartbeat, HeartbeatAdmin)

    def has_permission(self, request):
        # The admin role (a group) grants access; no separate is_staff bookkeeping.
        user = request.user
        # The admin's second factor too (AdminOTPMiddleware sends them to it first).
        return (
            user.is_active
            and (user.is_superuser or user.has_perm(CONFIGURE_PERM))
            and not otp_step_needed(user)
        )

    def admin_view(self, view, cacheable=False):
        checked = super().admin_view(view, cacheable)

        def inner(request, *args, **kwargs):
            # Django sends everyone without permission to the admin login; ours (below) hands
            # over to /login/, which sends a signed-in user straight back to `next`: a loop.
            # Logging in again cannot help someone already signed in, so they get the 403
            # page; anonymous users still go to the login page.
            if request.user.is_authenticated and not self.has_permission(request):
                raise PermissionDenied(NO_ADMIN_ACCESS)
            return checked(request, *args, **kwargs)

        if not cacheable:
            inner = never_cache(inner)
        return update_wrapper(inner, checked)

    def login(self, request, extra_context=None):
        if request.user.is_authenticated and not self.has_permission(request):
            raise PermissionDenied(NO_ADMIN_ACCESS)
        # One login page for the whole site, so throttling and audit apply to the admin too.
        target = request.GET.get("next") or resolve_url("admin:index")
        return redirect_to_login(target, resolve_url("login"))


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by services only (audit trail, money): visible, never edited by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline:
    can_delete = False
    extra = 0
    max_num = 0

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "actor_kind",
        "actor_label",
        "action",
        "subject_type",
        "subject_id",
        "from_state",
        "to_state",
    ]
    list_filter = ["actor_kind", "action", "subject_type"]
    search_fields = ["actor_label", "action", "subject_id", "session_ref", "reason"]
    list_select_related = ["actor_user"]
    date_hierarchy = "at"


class ExceptionRecordAdmin(admin.ModelAdmin):
    list_display = ["title", "kind", "severity", "created_at", "resolved_at", "resolved_by"]
    list_filter = ["kind", "severity", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "dedupe_key", "terminal_ref", "session_ref", "subject_id"]
    list_select_related = ["resolved_by"]
    # Resolving goes through the dashboard (evpay.exceptions.resolve_exception) so it is
    # audited; here only the facts are shown.
    readonly_fields = [f.name for f in ExceptionRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class JobRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "kind", "subject", "triggered_by", "outcome", "finished_at"]
    list_filter = ["kind", "outcome"]
    search_fields = ["kind", "subject", "triggered_by", "error"]
    date_hierarchy = "started_at"


class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "seen_at", "detail"]
    search_fields = ["name"]
