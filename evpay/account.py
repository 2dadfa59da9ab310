"""The signed-in staff member's own account: password change and (admins) the TOTP device."""

from base64 import b32encode

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django_otp import devices_for_user, user_has_device
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from evpay import audit
from evpay.roles import CONFIGURE_PERM, permission_required


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's view (login required, CSRF, old password, the validators); on success back to
    the overview with a message instead of a separate "done" page, and an audit row."""

    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("overview")

    def form_valid(self, form):
        response = super().form_valid(form)  # saves and keeps this session signed in
        user = self.request.user
        audit.record(audit.Actor.user(user), user, "account.password_changed")
        messages.success(self.request, _("Your password was changed."))
        return response


def _next_url(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return reverse("overview")


@permission_required(CONFIGURE_PERM)
def otp_setup(request):
    """An admin enrols an authenticator app: the otpauth URI and secret, then one token."""
    user = request.user
    if user_has_device(user):
        messages.info(request, _("An authenticator app is already set up for your account."))
        return redirect("overview")
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="evpay", confirmed=False)
    error = ""
    if request.method == "POST":
        if device.verify_token(request.POST.get("token", "").strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            otp_login(request, device)
            audit.record(audit.Actor.user(user), user, "account.otp_enrolled")
            messages.success(request, _("Authenticator app set up: log-ins now ask for its code."))
            return redirect(_next_url(request))
        error = _("That code did not match. Check the app's clock and try the current code.")
    context = {
        "config_url": device.config_url,
        "secret": b32encode(device.bin_key).decode(),
        "error": error,
        "next": _next_url(request),
    }
    return render(request, "registration/otp_setup.html", context)


@login_required
def otp_verify(request):
    """The second step of an admin's log-in: a token from their enrolled device."""
    error = ""
    if request.method == "POST":
        token = request.POST.get("token", "").strip()
        for device in devices_for_user(request.user):
            if device.verify_token(token):
                otp_login(request, device)
                return redirect(_next_url(request))
        error = _("That code did not match. Try the current code from your authenticator app.")
    context = {"error": error, "next": _next_url(request)}
    return render(request, "registration/otp_verify.html", context)
