"""Staff sessions end after EVPAY_SESSION_IDLE_MINUTES without activity (issue #18 item 9)."""

import time

import pytest

from evpay.security import LAST_ACTIVITY

POLL = {"HTTP_HX_REQUEST": "true", "HTTP_X_EVPAY_POLL": "1", "HTTP_HX_CURRENT_URL": "/"}


def _idle_for(client, minutes):
    session = client.session
    session[LAST_ACTIVITY] = time.time() - minutes * 60
    session.save()


@pytest.fixture
def staff(client_for, operator):
    client = client_for(operator)
    assert client.get("/").status_code == 200  # the first request starts the idle clock
    return client


@pytest.mark.django_db
def test_activity_within_the_limit_keeps_the_session_and_restarts_the_clock(staff):
    _idle_for(staff, 14)
    assert staff.get("/terminals/").status_code == 200
    assert time.time() - staff.session[LAST_ACTIVITY] < 5
    _idle_for(staff, 14)
    assert staff.get("/").status_code == 200


@pytest.mark.django_db
def test_polls_alone_do_not_keep_the_session_alive(staff):
    _idle_for(staff, 10)
    before = staff.session[LAST_ACTIVITY]
    for _ in range(3):
        assert staff.get("/", **POLL).status_code == 200
    assert staff.session[LAST_ACTIVITY] == before
    _idle_for(staff, 16)
    response = staff.get("/", **POLL)
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=%2F"


@pytest.mark.django_db
def test_after_the_limit_the_next_request_goes_to_the_login_page_with_a_message(staff):
    _idle_for(staff, 16)
    response = staff.get("/sessions/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=%2Fsessions%2F"
    login = staff.get(response["Location"])
    assert "signed out after 15 minutes without activity" in login.content.decode()
    assert staff.get("/").status_code == 302  # really signed out


@pytest.mark.django_db
def test_an_htmx_click_after_the_limit_gets_hx_redirect_to_the_page_it_came_from(staff):
    _idle_for(staff, 16)
    response = staff.get(
        "/exceptions/", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/exceptions/"
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login/?next=%2Fexceptions%2F"


@pytest.mark.django_db
def test_the_limit_is_configurable(staff, settings):
    settings.EVPAY_SESSION_IDLE_MINUTES = 30
    _idle_for(staff, 20)
    assert staff.get("/").status_code == 200


@pytest.mark.django_db
def test_a_poll_from_a_session_that_is_gone_gets_hx_redirect_not_the_login_form(client):
    response = client.get("/", **POLL)
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/?next=")
