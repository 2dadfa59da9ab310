"""Staff change their own password (issue #18 item 9): /account/password/."""

import pytest
from django.test import Client

from evpay.models import AuditEvent
from tests.conftest import PASSWORD

URL = "/account/password/"


def _change(client, new, old=PASSWORD):
    return client.post(URL, {"old_password": old, "new_password1": new, "new_password2": new})


@pytest.mark.django_db
def test_a_signed_in_staff_member_changes_their_password_and_stays_signed_in(client_for, viewer):
    client = client_for(viewer)
    response = _change(client, "a-new-long-passphrase")
    assert response.status_code == 302
    assert response["Location"] == "/"
    viewer.refresh_from_db()
    assert viewer.check_password("a-new-long-passphrase")
    page = client.get("/")  # the session hash was updated: still signed in
    assert page.status_code == 200
    assert "Your password was changed." in page.content.decode()
    event = AuditEvent.objects.get(action="account.password_changed")
    assert event.actor_user_id == viewer.pk


@pytest.mark.django_db
def test_a_password_shorter_than_twelve_characters_is_refused(client_for, viewer):
    client = client_for(viewer)
    response = _change(client, "Xq7!vB2#pL9")  # 11 characters, not common, not numeric
    assert response.status_code == 200
    assert "at least 12 characters" in response.content.decode()
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)


@pytest.mark.django_db
def test_twelve_characters_are_enough(client_for, viewer):
    response = _change(client_for(viewer), "Xq7!vB2#pL9z")
    assert response.status_code == 302


@pytest.mark.django_db
def test_the_wrong_current_password_changes_nothing(client_for, viewer):
    response = _change(client_for(viewer), "a-new-long-passphrase", old="not-it")
    assert response.status_code == 200
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="account.password_changed").exists()


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.django_db
def test_changing_the_password_needs_the_csrf_token(viewer):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(viewer, backend="django.contrib.auth.backends.ModelBackend")
    assert _change(strict, "a-new-long-passphrase").status_code == 403


@pytest.mark.django_db
def test_the_user_menu_links_to_the_password_page(client_for, operator):
    page = client_for(operator).get("/").content.decode()
    assert f'href="{URL}"' in page
    form = client_for(operator).get(URL)
    assert form.status_code == 200
    assert 'name="new_password1"' in form.content.decode()
