import pytest

from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_staff_log_in_with_username_and_password(client, viewer):
    response = client.post("/login/", {"username": viewer.username, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_wrong_password_shows_a_readable_error(client, viewer):
    response = client.post("/login/", {"username": viewer.username, "password": "nope"})
    assert response.status_code == 200
    assert b"did not match" in response.content


@pytest.mark.django_db
def test_repeated_failed_logins_are_throttled(client, viewer, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": viewer.username, "password": "wrong"})
    # Even the right password is refused while locked out.
    response = client.post("/login/", {"username": viewer.username, "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed log-ins" in response.content
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_login_requires_csrf_token(viewer):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/login/", {"username": viewer.username, "password": PASSWORD})
    assert response.status_code == 403
