"""Every page needs a login; roles decide what each user may do."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# The driver's receipt pages (sessions/public.py) are public by design, tested in
# tests/dashboard/test_public_receipts.py.
PUBLIC = {"/healthz", "/login/", "/api/v1/", "/static/", "/r/", "/receipt/"}
# Log-out changes state, so it only accepts POST; a GET is refused before any login check.
POST_ONLY = {"/logout/"}


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _concrete(route: str) -> str:
    """Fill path converters with plausible values so the URL resolves."""
    route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")
    route = re.sub(r"<(?:int:)?[a-z_]*id>|<int:[a-z_]+>|<path:[a-z_]+>", "1", route)
    route = re.sub(r"<uuid:[a-z_]+>", "00000000-0000-0000-0000-000000000000", route)
    route = re.sub(r"<(?:str:|slug:)?[a-z_]+>", "x", route)
    route = re.sub(r"\(\?P<[a-z_]+>[^)]*\)", "x", route)
    route = re.sub(r"[()?*+|]", "", route)
    return "/" + route


def all_urls():
    return sorted({_concrete(r) for r in _walk(get_resolver().url_patterns)})


def test_url_walk_finds_the_pages():
    urls = all_urls()
    assert "/" in urls and "/login/" in urls and "/admin/" in urls


@pytest.mark.django_db
@pytest.mark.parametrize("url", [u for u in all_urls() if not u.startswith(tuple(PUBLIC))])
def test_anonymous_users_are_sent_to_a_login_page(client, url):
    response = client.get(url)
    if url in POST_ONLY:
        assert response.status_code == 405
        return
    assert response.status_code in (301, 302), f"{url} answered {response.status_code}"
    final = client.get(url, follow=True)
    landed = final.redirect_chain[-1][0]
    assert landed.startswith("/login/"), f"{url} ended at {landed}"
    assert final.status_code == 200


@pytest.mark.django_db
def test_login_page_and_healthz_are_public(client):
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").status_code == 200


# role -> (overview, admin index); signed-in users without the admin role get the 403 page
# from the admin (a redirect to log in would loop: they are logged in already).
MATRIX = {
    "viewer": (200, 403),
    "operator": (200, 403),
    "admin_user": (200, 200),
    "no_role_user": (403, 403),
}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", MATRIX)
def test_role_matrix_for_existing_pages(request, client_for, persona):
    user = request.getfixturevalue(persona)
    client = client_for(user)
    overview, admin = MATRIX[persona]
    response = client.get("/")
    assert response.status_code == overview
    if overview == 403:
        assert b"Not allowed" in response.content
    response = client.get("/admin/", follow=True)
    assert response.status_code == admin and response.redirect_chain == []


@pytest.mark.django_db
def test_logout_requires_post_and_ends_the_session(client_for, viewer):
    client = client_for(viewer)
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_pages_carry_the_csrf_token_for_htmx_and_vendored_assets(client_for, viewer):
    html = client_for(viewer).get("/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "/static/vendor/htmx-2.0.11/htmx.min.js" in html
    assert "//unpkg" not in html and "cdn" not in html.lower()


@pytest.mark.django_db
def test_vendored_htmx_is_served_by_django(client):
    response = client.get("/static/vendor/htmx-2.0.11/htmx.min.js")
    assert response.status_code == 200
    assert b"htmx" in b"".join(response.streaming_content)


# pytest-django runs tests with DEBUG off; the demo (`make run`) runs with it on. The client
# fixture builds its middleware on the first request, so the setting below applies to it.
@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("persona", ["viewer", None])
def test_unknown_urls_show_the_projects_404_page_even_with_debug_on(
    request, settings, client_for, debug, persona
):
    settings.DEBUG = debug
    client = client_for(persona and request.getfixturevalue(persona))
    paths = ["/no-such-page/"]
    if persona:
        # Http404 from a view (get_object_or_404), not from URL resolution.
        paths.append("/terminals/00000000-0000-0000-0000-000000000000/")
    for path in paths:
        response = client.get(path)
        html = response.content.decode()
        assert response.status_code == 404, path
        assert "<h1>Not found</h1>" in html and "Using the URLconf" not in html, path
        assert "technical_404" not in html and "DEBUG = True" not in html, path
        assert ("Log out" in html) == (persona is not None), path


@pytest.mark.django_db
def test_missing_slash_still_redirects_with_debug_on(settings, client_for, viewer):
    settings.DEBUG = True
    response = client_for(viewer).get("/jobs")
    assert response.status_code == 301 and response["Location"] == "/jobs/"


@pytest.mark.django_db
def test_evpay_technical_404_brings_back_djangos_page_for_debugging(settings, client):
    settings.DEBUG = True
    settings.EVPAY_TECHNICAL_404 = True
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and b"Using the URLconf" in response.content
