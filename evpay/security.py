"""Staff session safety: the idle timeout, and the admins' second factor (TOTP)."""

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpResponse
from django.shortcuts import redirect, resolve_url
from django.utils.translation import gettext as _

LAST_ACTIVITY = "evpay_last_activity"
ACTIVITY_RESOLUTION = 60  # seconds
POLL_HEADER = "X-Evpay-Poll"  # set by static/js/evpay.js on htmx `every …` polls
# Pages for drivers without an account (sessions/public.py): no staff session rules apply, so a
# signed-in admin opening a driver's link is neither timed out nor sent to the second factor.
PUBLIC_PATHS = ("/r/", "/receipt/")


def is_poll(request) -> bool:
    return bool(getattr(request, "htmx", False)) and request.headers.get(POLL_HEADER) == "1"


def to_login(request, next_path: str) -> HttpResponse:
    """The login page, as a redirect, or for htmx as HX-Redirect: a 302 would be followed by
    htmx and the login page swapped into the fragment."""
    url = f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': next_path})}"
    if getattr(request, "htmx", False):
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


def _page_path(request) -> str:
    # For an htmx request the page the user is on, not the fragment's URL.
    htmx = getattr(request, "htmx", False)
    return (htmx and htmx.current_url_abs_path) or request.get_full_path()


def start_idle_clock(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        request.session[LAST_ACTIVITY] = time.time()


class IdleTimeoutMiddleware:
    """Signs staff out after EVPAY_SESSION_IDLE_MINUTES without a real request.

    Real requests (pages, clicks, posts) move the last-activity time; live polls do not, so a
    forgotten tab still times out. SESSION_COOKIE_AGE alone cannot do this: every poll would
    refresh it. After auth, messages and django-htmx in MIDDLEWARE.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated and not request.path.startswith(PUBLIC_PATHS):
            now = time.time()
            last = request.session.get(LAST_ACTIVITY)
            idle_seconds = settings.EVPAY_SESSION_IDLE_MINUTES * 60
            if last is not None and now - last > idle_seconds:
                next_path = _page_path(request)
                logout(request)
                messages.info(
                    request,
                    _(
                        "You were signed out after %(minutes)d minutes without activity. "
                        "Please log in again."
                    )
                    % {"minutes": settings.EVPAY_SESSION_IDLE_MINUTES},
                )
                return to_login(request, next_path)
            # At most one session write a minute: a click-through of pages saves once, and
            # the timeout is a quarter of an hour, not to the second.
            if last is None or (not is_poll(request) and now - last >= ACTIVITY_RESOLUTION):
                request.session[LAST_ACTIVITY] = now
        response = self.get_response(request)
        # A session that ended some other way (expired in the store): an htmx poll would get
        # the login page's 302, follow it and swap the form into the fragment.
        if (
            getattr(request, "htmx", False)
            and response.status_code == 302
            and response.get("Location", "").startswith(resolve_url(settings.LOGIN_URL) + "?")
        ):
            return to_login(request, _page_path(request))
        return response


# --------------------------------------------------------------------------- second factor
# Admins may enrol a TOTP device (evpay/account.py); once they have a confirmed one, signing in
# takes a token after the password. With EVPAY_REQUIRE_ADMIN_OTP admins must enrol first.

# The language switches too: the code page itself may need to be read in another language.
OTP_OPEN_PATHS = (
    "/account/otp/",
    "/account/language/",
    "/i18n/",
    "/logout/",
    "/static/",
    "/healthz",
    *PUBLIC_PATHS,
)


def is_admin(user) -> bool:
    from evpay.roles import CONFIGURE_PERM, load_permissions

    # Every request asks this first (AdminOTPMiddleware): one query for all its role checks.
    load_permissions(user)
    return user.is_active and (user.is_superuser or user.has_perm(CONFIGURE_PERM))


def otp_step_needed(user) -> str:
    """The step the user still owes ("verify" or "setup"), or an empty string for none."""
    from django_otp import user_has_device

    if not user.is_authenticated or not is_admin(user) or user.is_verified():
        return ""
    if user_has_device(user):
        return "verify"
    return "setup" if settings.EVPAY_REQUIRE_ADMIN_OTP else ""


class AdminOTPMiddleware:
    """After django_otp's OTPMiddleware: an admin who owes the second step sees only it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        step = otp_step_needed(request.user)
        if step and not request.path.startswith(OTP_OPEN_PATHS):
            url = f"{resolve_url('otp_' + step)}?{urlencode({'next': _page_path(request)})}"
            if getattr(request, "htmx", False):
                return HttpResponse(status=204, headers={"HX-Redirect": url})
            return redirect(url)
        return self.get_response(request)
