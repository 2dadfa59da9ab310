"""Staff roles: three groups, each a set of permissions.

viewer   reads everything, changes nothing
operator viewer + acts on sessions, exceptions and terminals
admin    operator + configures terminals, tariffs, users; may use the Django admin

Views check permissions (``evpay.operate``, ``evpay.configure``), never group names, so a
site can give one person an extra permission without a new role.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
# As the header shows them (the codes stay the group names).
ROLE_LABELS = {
    VIEWER: gettext_lazy("viewer"),
    OPERATOR: gettext_lazy("operator"),
    ADMIN: gettext_lazy("admin"),
}

VIEW_PERM = "evpay.view_dashboard"
OPERATE_PERM = "evpay.operate"
CONFIGURE_PERM = "evpay.configure"

# Apps whose models the roles cover.
OWN_APPS = ("evpay", "terminals", "charging")
# Admins also manage users and the beat schedules.
ADMIN_EXTRA_APPS = ("auth", "django_celery_beat", "axes", "otp_totp")


def load_permissions(user) -> None:
    """Read the user's permissions, their own and their groups', in one query, and keep them
    where ModelBackend keeps those it read (`_perm_cache`, on the request's user): the role
    checks after this ask nothing more. ModelBackend reads the two in two queries, and every
    staff page pays its login's queries before its own (issue 19).

    Left to ModelBackend: users it answers without reading (anonymous and inactive have none,
    User.has_perm lets superusers do anything first) and users it has already read. Were
    Django to keep its cache under another name, it would read them again itself: the
    answers stay the same, the query tests/test_roles.py counts comes back."""
    if not user.is_authenticated or not user.is_active or user.is_superuser:
        return
    if hasattr(user, "_perm_cache"):
        return
    # ModelBackend's two querysets, as subqueries of one (a join of both would multiply rows).
    own = user.user_permissions.values("pk")
    of_groups = Permission.objects.filter(group__in=user.groups.all()).values("pk")
    perms = (
        Permission.objects.filter(Q(pk__in=own) | Q(pk__in=of_groups))
        .values_list("content_type__app_label", "codename")
        .order_by()
    )
    user._perm_cache = {f"{app_label}.{codename}" for app_label, codename in perms}


def user_roles(user) -> frozenset[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(ROLES)
    load_permissions(user)
    roles = set()
    if user.has_perm(VIEW_PERM):
        roles.add(VIEWER)
    if user.has_perm(OPERATE_PERM):
        roles.add(OPERATOR)
    if user.has_perm(CONFIGURE_PERM):
        roles.add(ADMIN)
    return frozenset(roles)


def permission_required(perm: str):
    """login_required + a permission check that answers 403 (readable page) when missing."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            load_permissions(request.user)
            if not request.user.has_perm(perm):
                raise PermissionDenied(
                    _("Your role does not allow this (%(permission)s).")
                    % {"permission": perm.split(".")[-1]}
                )
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator


def sync_role_permissions(apps=None, **_kwargs) -> None:
    """Give each role group exactly its permissions; safe to run any number of times.

    Runs from the data migration and after every ``migrate`` (post_migrate), so models
    added by later migrations are covered without another data migration.
    """
    from django.apps import apps as global_apps

    apps = apps or global_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    own = Permission.objects.filter(content_type__app_label__in=OWN_APPS)
    view_perms = list(
        Permission.objects.filter(
            content_type__app_label__in=OWN_APPS + ADMIN_EXTRA_APPS, codename__startswith="view_"
        )
    )
    custom = {
        p.codename: p for p in own.filter(codename__in=["view_dashboard", "operate", "configure"])
    }

    wanted = {
        VIEWER: view_perms + [custom[c] for c in ("view_dashboard",) if c in custom],
        OPERATOR: view_perms + [custom[c] for c in ("view_dashboard", "operate") if c in custom],
        ADMIN: list(
            Permission.objects.filter(content_type__app_label__in=OWN_APPS + ADMIN_EXTRA_APPS)
        ),
    }
    for name, perms in wanted.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(perms)
