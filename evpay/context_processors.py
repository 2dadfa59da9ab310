from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from evpay import supervision
from evpay.i18n import staff_language_choices
from evpay.roles import ADMIN, ROLE_LABELS, ROLES, user_roles

# (label, url name, path prefix that marks it current)
NAV = [
    (_("Overview"), "overview", None),
    (_("Terminals"), "terminals:list", "/terminals/"),
    (_("Sessions"), "sessions:list", "/sessions/"),
    (_("Receipts"), "sessions:receipts", "/receipts/"),
    (_("Exceptions"), "exceptions", "/exceptions/"),
    (_("Closings"), "terminals:closings", "/closings/"),
    (_("Job runs"), "job_runs", "/jobs/"),
]


def roles(request):
    """The user's roles and the main menu."""
    user = getattr(request, "user", None)
    user_role_set = user_roles(user) if user is not None else frozenset()
    return {
        "roles": user_role_set,
        "role_labels": [ROLE_LABELS[role] for role in ROLES if role in user_role_set],
        "nav_items": navigation(request, user_role_set),
        "staff_languages": staff_language_choices() if user_role_set else [],
    }


def navigation(request, user_role_set) -> list[dict]:
    """The Admin link only for the admin role (the admin site checks again)."""
    if not user_role_set:
        return []
    path = request.path
    items = []
    for label, name, prefix in NAV:
        url = reverse(name)
        current = path == url if prefix is None else path.startswith(prefix)
        items.append({"label": label, "url": url, "current": current})
    if ADMIN in user_role_set:
        items.append({"label": _("Admin"), "url": reverse("admin:index"), "current": False})
    return items


def stack_alerts(request):
    """Processes of `make run` that keep crashing, for staff only (base.html's banner)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user_roles(user):
        return {}
    return {"stack_alerts": supervision.restart_alerts()}
