"""Admins' TOTP second factor with django-otp (issue #18 item 9), with real tokens."""

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.conftest import PASSWORD


def _token(device, offset=0):
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=offset):06d}"


def _wait_out_the_throttle(device):
    # django-otp throttles after a wrong token (1 s, doubling): a person waits, the test resets.
    device.refresh_from_db()
    device.throttle_reset()


def _log_in(client, user):
    return client.post("/login/", {"username": user.username, "password": PASSWORD})


@pytest.fixture
def enrolled_admin(admin_user):
    TOTPDevice.objects.create(user=admin_user, name="phone", confirmed=True)
    return admin_user


@pytest.mark.django_db
def test_an_admin_enrols_a_device_with_a_real_token(client, admin_user):
    _log_in(client, admin_user)
    page = client.get("/account/otp/setup/")
    assert page.status_code == 200
    assert "otpauth://totp/" in page.content.decode()
    device = TOTPDevice.objects.get(user=admin_user, confirmed=False)
    wrong = client.post(
        "/account/otp/setup/", {"token": "000000" if _token(device) != "000000" else "111111"}
    )
    assert "did not match" in wrong.content.decode()
    _wait_out_the_throttle(device)
    done = client.post("/account/otp/setup/", {"token": _token(device)})
    assert done.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_an_enrolled_admin_needs_the_token_after_the_password(client, enrolled_admin):
    assert _log_in(client, enrolled_admin).status_code == 302
    response = client.get("/terminals/")
    assert response.status_code == 302
    assert response["Location"] == "/account/otp/verify/?next=%2Fterminals%2F"
    assert client.get("/admin/").status_code == 302  # the Django admin too
    device = TOTPDevice.objects.get(user=enrolled_admin)
    wrong = client.post("/account/otp/verify/", {"token": "12345x"})
    assert "did not match" in wrong.content.decode()
    _wait_out_the_throttle(device)
    ok = client.post("/account/otp/verify/", {"token": _token(device), "next": "/terminals/"})
    assert ok.status_code == 302 and ok["Location"] == "/terminals/"
    assert client.get("/terminals/").status_code == 200
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_htmx_requests_of_an_unverified_admin_get_hx_redirect(client, enrolled_admin):
    _log_in(client, enrolled_admin)
    response = client.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/account/otp/verify/")


@pytest.mark.django_db
def test_admins_without_a_device_go_on_unless_otp_is_required(client, admin_user, settings):
    _log_in(client, admin_user)
    assert client.get("/admin/").status_code == 200
    settings.EVPAY_REQUIRE_ADMIN_OTP = True
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/otp/setup/")


@pytest.mark.django_db
def test_operators_never_need_a_second_factor(client, operator, settings):
    settings.EVPAY_REQUIRE_ADMIN_OTP = True
    _log_in(client, operator)
    assert client.get("/").status_code == 200
    assert client.get("/account/otp/setup/").status_code == 403
