"""Role checks read a user's permissions once, in one query, and answer as ModelBackend does."""

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission

from evpay.roles import (
    ADMIN,
    CONFIGURE_PERM,
    OPERATE_PERM,
    OPERATOR,
    ROLES,
    VIEW_PERM,
    VIEWER,
    load_permissions,
    user_roles,
)

pytestmark = pytest.mark.django_db


def _fresh(user):
    """The same user as a new object: nothing read on it yet."""
    return type(user).objects.get(pk=user.pk)


@pytest.fixture
def viewer_with_a_direct_permission(viewer):
    viewer.user_permissions.add(
        Permission.objects.get(codename="operate", content_type__app_label="evpay")
    )
    return viewer


@pytest.mark.parametrize(
    "persona",
    ["viewer", "operator", "admin_user", "no_role_user", "viewer_with_a_direct_permission"],
)
def test_one_query_reads_what_model_backend_reads_in_two(
    request, persona, django_assert_num_queries
):
    user = _fresh(request.getfixturevalue(persona))
    with django_assert_num_queries(1):
        load_permissions(user)
    assert user._perm_cache == ModelBackend().get_all_permissions(_fresh(user))


def test_after_it_role_checks_ask_nothing(operator, django_assert_num_queries):
    user = _fresh(operator)
    load_permissions(user)
    with django_assert_num_queries(0):
        load_permissions(user)
        assert user.has_perm(VIEW_PERM) and user.has_perm(OPERATE_PERM)
        assert not user.has_perm(CONFIGURE_PERM)
        assert user_roles(user) == {VIEWER, OPERATOR}


def test_user_roles_reads_once_for_all_three_roles(admin_user, django_assert_num_queries):
    user = _fresh(admin_user)
    with django_assert_num_queries(1):
        assert user_roles(user) == {VIEWER, OPERATOR, ADMIN}


def test_a_direct_permission_counts_beside_the_groups(viewer_with_a_direct_permission):
    user = _fresh(viewer_with_a_direct_permission)
    load_permissions(user)
    assert user_roles(user) == {VIEWER, OPERATOR}


def test_an_inactive_user_has_no_role_and_nothing_is_read(operator, django_assert_num_queries):
    operator.is_active = False
    operator.save()
    user = _fresh(operator)
    with django_assert_num_queries(0):
        load_permissions(user)
        assert user_roles(user) == frozenset()
        assert not user.has_perm(VIEW_PERM)


def test_a_superuser_has_every_role_without_a_query(django_user_model, django_assert_num_queries):
    user = _fresh(django_user_model.objects.create_superuser("sue", password="x" * 20))
    with django_assert_num_queries(0):
        load_permissions(user)
        assert user_roles(user) == frozenset(ROLES)
        assert user.has_perm(CONFIGURE_PERM)


def test_a_group_change_shows_on_the_next_request(client_for, viewer):
    """The permissions live on the request's user object: nothing outlives the request."""
    client = client_for(viewer)
    assert client.get("/terminals/").status_code == 200
    viewer.groups.clear()
    assert client.get("/terminals/").status_code == 403
