"""Every dashboard page renders for each role that may read it, as a page and as a fragment."""

import pytest

from tests.dashboard.conftest import url


def pages(world):
    t, s, c, _e = world["terminal"], world["closed"], world["closing"], world["exception"]
    return [
        url("overview"),
        url("terminals:list"),
        url("terminals:detail", t.public_id),
        url("terminals:closings"),
        url("terminals:closing_detail", c.public_id),
        url("sessions:list"),
        url("sessions:detail", s.public_id),
        url("sessions:receipt", s.public_id),
        url("sessions:receipts"),
        url("exceptions"),
        url("job_runs"),
    ]


@pytest.mark.parametrize("persona", ["viewer", "operator", "admin_user"])
def test_every_page_renders_for_each_reading_role(request, client_for, world, persona):
    client = client_for(request.getfixturevalue(persona))
    for page in pages(world):
        response = client.get(page)
        assert response.status_code == 200, page
        assert b"<html" in response.content, page


def test_users_without_a_role_are_refused_every_page(client_for, world, no_role_user):
    client = client_for(no_role_user)
    for page in pages(world):
        assert client.get(page).status_code == 403, page


def test_anonymous_users_are_sent_to_log_in_from_every_page(client, world):
    for page in pages(world):
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), page


def test_pages_refuse_post_with_405(client_for, world, operator):
    client = client_for(operator)
    for page in pages(world):
        assert client.post(page).status_code == 405, page


@pytest.mark.parametrize(
    "name",
    [
        "overview",
        "terminals:list",
        "terminals:closings",
        "sessions:list",
        "sessions:receipts",
        "exceptions",
        "job_runs",
    ],
)
def test_htmx_requests_get_only_the_fragment(client_for, world, viewer, name):
    response = client_for(viewer).get(url(name), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert b'<nav aria-label="Main"' not in response.content


def test_main_navigation_lists_the_pages_and_admin_only_for_admins(
    client_for, world, viewer, admin_user
):
    html = client_for(viewer).get(url("overview")).content.decode()
    for label in ("Terminals", "Sessions", "Receipts", "Exceptions", "Closings", "Job runs"):
        assert f">{label}</a>" in html
    assert ">Admin</a>" not in html
    html = client_for(admin_user).get(url("overview")).content.decode()
    assert ">Admin</a>" in html
