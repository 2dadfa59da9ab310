"""Languages: which ones where, a staff member's stored choice, and the header's selector.

Staff pages come in STAFF_LANGUAGES; a signed-in staff member's stored choice
(StaffPreferences.language) wins over the browser's, drivers get LocaleMiddleware's answer
(the language cookie that set_language writes, else Accept-Language, else LANGUAGE_CODE).
The driver pages (evpay.security.PUBLIC_PATHS) come in every one of settings.LANGUAGES; any
other page asked for in a language the staff pages lack is shown in LANGUAGE_CODE.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from evpay import audit
from evpay.models import StaffPreferences
from evpay.security import PUBLIC_PATHS
from evpay.web import after_post

#: Staff pages are translated into these (the driver pages may have more, settings.LANGUAGES).
STAFF_LANGUAGES = ("en", "nl")
#: The session key holding the stored choice ("" for none), set at log-in and on a change.
SESSION_KEY = "evpay_language"
#: Paths for machines, always in LANGUAGE_CODE.
MACHINE_PATHS = ("/api/", "/healthz")


def check_compiled_catalogues(app_configs=None, **kwargs):
    """System check: a catalogue without a current .mo file is not used (pages stay English)."""
    from pathlib import Path

    from django.core.checks import Warning

    problems = []
    for base in settings.LOCALE_PATHS:
        for po in sorted(Path(base).glob("*/LC_MESSAGES/*.po")):
            mo = po.with_suffix(".mo")
            if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
                problems.append(
                    Warning(
                        f"{mo} is missing or older than {po.name}: those pages show English.",
                        hint="Run `python manage.py compilemessages --ignore=.venv --ignore=var` "
                        "(needs GNU gettext; `make run` and `make test` do it).",
                        id="evpay.W001",
                    )
                )
    return problems


def is_staff_language(language: str | None) -> bool:
    """Whether the staff pages are translated into this language (or one of its variants)."""
    return (language or "").split("-")[0] in STAFF_LANGUAGES


def staff_language_choices() -> list[tuple[str, str]]:
    names = dict(settings.LANGUAGES)
    return [(code, names[code]) for code in STAFF_LANGUAGES if code in names]


def load_preference(sender, request, user, **kwargs):
    """user_logged_in: copy the stored choice into the session (one query, at log-in only)."""
    if request is None or not hasattr(request, "session"):
        return
    language = StaffPreferences.objects.filter(user=user).values_list("language", flat=True).first()
    request.session[SESSION_KEY] = language or ""


class StaffLanguageMiddleware:
    """After LocaleMiddleware and auth: a signed-in staff member's stored language wins.

    Before the idle timeout, so "you were signed out" is in their language too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(MACHINE_PATHS):
            # Chargers read the API's texts (and log them): one language whatever they send.
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = translation.get_language()
            return self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if SESSION_KEY not in request.session:  # a session from before this feature
                load_preference(None, request, user)
            language = request.session.get(SESSION_KEY) or ""
            if language in STAFF_LANGUAGES:
                translation.activate(language)
                request.LANGUAGE_CODE = translation.get_language()
        if not request.path.startswith(PUBLIC_PATHS) and not is_staff_language(
            translation.get_language()
        ):
            # A German browser (or a driver's German choice in the cookie) on the log-in or a
            # staff page: English throughout rather than Django's German among English texts.
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = translation.get_language()
        return self.get_response(request)


@login_required
@require_POST
def set_staff_language(request):
    """The header's selector: store the choice, apply it now, and set Django's language
    cookie so the log-in page after signing out is in the same language."""
    language = request.POST.get("language", "")
    if language not in STAFF_LANGUAGES:
        return HttpResponseBadRequest(_("Unknown language."), content_type="text/plain")
    prefs, _created = StaffPreferences.objects.get_or_create(user=request.user)
    previous = prefs.language
    if previous != language:
        prefs.language = language
        prefs.save(update_fields=["language", "updated_at"])
        audit.record(
            audit.Actor.user(request.user),
            request.user,
            "account.language_changed",
            from_state=previous,
            to_state=language,
        )
    request.session[SESSION_KEY] = language
    translation.activate(language)
    response = after_post(request, reverse("overview"))
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        language,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )
    return response
