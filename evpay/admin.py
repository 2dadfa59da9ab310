from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import resolve_url

from evpay.roles import CONFIGURE_PERM


class EvpayAdminSite(admin.AdminSite):
    site_header = "evpay administration"
    site_title = "evpay admin"
    index_title = "Configuration and raw data"

    def has_permission(self, request):
        # The admin role (a group) grants access; no separate is_staff bookkeeping.
        user = request.user
        return user.is_active and (user.is_superuser or user.has_perm(CONFIGURE_PERM))

    def login(self, request, extra_context=None):
        # One login page for the whole site, so throttling and audit apply to the admin too.
        target = request.GET.get("next") or resolve_url("admin:index")
        return redirect_to_login(target, resolve_url("login"))
