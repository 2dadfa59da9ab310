"""Languages: staff read the pages in their stored language (Dutch or English), anyone else by
Accept-Language or the language cookie; English when nothing says otherwise. Money, numbers
and times follow the language."""

from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from evpay.models import AuditEvent, StaffPreferences
from tests.dashboard.conftest import url

pytestmark = pytest.mark.usefixtures("compiled_catalogues")


def _prefer(user, language):
    StaffPreferences.objects.update_or_create(user=user, defaults={"language": language})


def test_a_dutch_staff_member_reads_the_overview_and_menu_in_dutch(client_for, viewer, world):
    _prefer(viewer, "nl")
    html = client_for(viewer).get(url("overview")).content.decode()
    assert '<html lang="nl"' in html
    assert "<h1>Overzicht</h1>" in html
    assert ">Laadsessies</a>" in html and ">Betaalautomaten</a>" in html
    assert ">Uitloggen</button>" in html
    assert "Vandaag vastgelegd" in html
    assert "Overview" not in html


def test_a_dutch_session_page_shows_dutch_labels_money_and_times(client_for, viewer, world):
    _prefer(viewer, "nl")
    session = world["closed"]
    session.cost_total_minor = session.authorised_amount_minor = 123456  # € 1.234,56
    session.save(update_fields=["cost_total_minor", "authorised_amount_minor"])
    html = client_for(viewer).get(url("sessions:detail", session.public_id)).content.decode()
    assert "Blokkeertarief" in html and "Kostenopbouw" in html
    assert "€\u00a01.234,56" in html and "€\u00a00,78" in html
    assert "10,000 kWh" in html
    requested = session.requested_at.astimezone(ZoneInfo(world["site"].time_zone))
    assert requested.strftime("%d-%m-%Y %H:%M:%S") in html
    # The timeline's audit labels and the state badge are translated too.
    assert "Laadsessie gesloten" in html and ">Gesloten</span>" in html


def test_english_is_the_default_without_a_choice_or_accept_language(client_for, viewer, world):
    html = (
        client_for(viewer).get(url("sessions:detail", world["closed"].public_id)).content.decode()
    )
    assert '<html lang="en"' in html
    assert "Idle fee" in html and "€\u00a04.50" in html and "10.000 kWh" in html


def test_switching_the_language_is_stored_audited_and_kept_at_the_next_log_in(
    client, client_for, operator, world
):
    staff = client_for(operator)
    response = staff.post(
        url("set_staff_language"), {"language": "nl", "next": url("terminals:list")}
    )
    assert response.status_code == 302 and response["Location"] == url("terminals:list")
    assert StaffPreferences.objects.get(user=operator).language == "nl"
    assert response.cookies["django_language"].value == "nl"
    event = AuditEvent.objects.get(action="account.language_changed")
    assert (event.actor_user_id, event.from_state, event.to_state) == (operator.pk, "", "nl")
    assert "<h1>Betaalautomaten</h1>" in staff.get(url("terminals:list")).content.decode()

    # Signed out and in again, from a browser without the cookie: still Dutch.
    staff.post(url("logout"))
    client.cookies.clear()
    client.force_login(operator, backend="django.contrib.auth.backends.ModelBackend")
    assert "<h1>Overzicht</h1>" in client.get(url("overview")).content.decode()

    # The same choice again changes nothing and writes no second audit row.
    client.post(url("set_staff_language"), {"language": "nl"})
    assert AuditEvent.objects.filter(action="account.language_changed").count() == 1
    client.post(url("set_staff_language"), {"language": "en"})
    assert "<h1>Overview</h1>" in client.get(url("overview")).content.decode()


def test_the_stored_choice_wins_over_the_browsers_accept_language(client_for, viewer, world):
    _prefer(viewer, "en")
    html = client_for(viewer).get(url("overview"), HTTP_ACCEPT_LANGUAGE="nl").content.decode()
    assert "<h1>Overview</h1>" in html


def test_a_staff_member_without_a_choice_gets_the_browsers_language(client_for, viewer, world):
    html = client_for(viewer).get(url("overview"), HTTP_ACCEPT_LANGUAGE="nl-NL,nl;q=0.9").content
    assert "<h1>Overzicht</h1>" in html.decode()


def test_the_language_selector_refuses_an_unknown_language_a_get_and_anonymous_visitors(
    client, client_for, operator, world
):
    assert client.post(url("set_staff_language"), {"language": "nl"}).status_code == 302
    assert not StaffPreferences.objects.exists()  # anonymous: sent to the log-in page
    staff = client_for(operator)
    assert staff.get(url("set_staff_language")).status_code == 405
    assert staff.post(url("set_staff_language"), {"language": "de"}).status_code == 400
    assert staff.post(
        url("set_staff_language"), {"language": "nl", "next": "https://evil.example/"}
    )["Location"] == url("overview")
    # Not a path: a URL name would be looked up by redirect() (a 500 before after_post checked).
    for target in ("NaN", "a:b", "overview"):
        response = staff.post(url("set_staff_language"), {"language": "en", "next": target})
        assert response["Location"] == url("overview")
    assert not StaffPreferences.objects.filter(language="de").exists()


def test_the_selector_is_in_the_header_with_the_current_language_chosen(client_for, viewer, world):
    _prefer(viewer, "nl")
    html = client_for(viewer).get(url("overview")).content.decode()
    assert f'action="{url("set_staff_language")}"' in html
    assert '<option value="nl" lang="nl" selected>Nederlands</option>' in html
    assert '<option value="en" lang="en">English</option>' in html


def test_an_anonymous_visitor_gets_dutch_by_accept_language_and_english_otherwise(client, db):
    assert (
        "<h1>Inloggen</h1>" in client.get(url("login"), HTTP_ACCEPT_LANGUAGE="nl").content.decode()
    )
    assert "<h1>Log in</h1>" in client.get(url("login")).content.decode()
    assert "<h1>Log in</h1>" in client.get(url("login"), HTTP_ACCEPT_LANGUAGE="fr").content.decode()


def test_an_anonymous_visitors_choice_through_set_language_is_kept_in_a_cookie(client, db):
    response = client.post("/i18n/setlang/", {"language": "nl", "next": "/login/"})
    assert response.status_code == 302 and response.cookies["django_language"].value == "nl"
    assert "<h1>Inloggen</h1>" in client.get(url("login")).content.decode()


def test_the_charger_api_answers_in_english_whatever_the_charger_asks_for(client, db):
    response = client.get("/api/v1/sessions/nothing/", HTTP_ACCEPT_LANGUAGE="nl")
    assert response.status_code in (401, 404)
    assert response["Content-Language"].startswith("en")


def test_the_stored_language_costs_no_query_per_page(client_for, viewer, world):
    staff = client_for(viewer)
    staff.get(url("sessions:list"))  # warm-up
    with CaptureQueriesContext(connection) as english:
        staff.get(url("sessions:list"))
    _prefer(viewer, "nl")
    staff.post(url("set_staff_language"), {"language": "nl"})
    with CaptureQueriesContext(connection) as dutch:
        assert "<h1>Laadsessies</h1>" in staff.get(url("sessions:list")).content.decode()
    assert len(dutch) == len(english)


def test_a_dutch_closings_page_shows_days_in_dutch_order(client_for, viewer, world):
    _prefer(viewer, "nl")
    closing = world["closing"]
    html = client_for(viewer).get(url("terminals:closings")).content.decode()
    assert f">{closing.business_date:%d-%m-%Y}</a>" in html
    assert "<h1>Periodeafsluitingen</h1>" in html and ">Verschil</span>" in html
    english = client_for(viewer)
    _prefer(viewer, "en")
    english.post(url("set_staff_language"), {"language": "en"})
    assert (
        f">{closing.business_date:%Y-%m-%d}</a>"
        in english.get(url("terminals:closings")).content.decode()
    )


def test_a_refused_value_is_explained_in_dutch_to_a_dutch_staff_member(client_for, viewer, world):
    _prefer(viewer, "nl")
    response = client_for(viewer).get(url("sessions:list"), {"min": "NaN"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "<h1>Ongeldig verzoek</h1>" in html
    assert "is geen eindig bedrag van hoogstens" in html


def test_the_public_language_switch_posts_to_set_language_with_every_language(rf, db):
    from django.template.loader import render_to_string
    from django.utils import translation

    request = rf.get("/receipt/abc/?x=1")
    with translation.override("nl"):
        html = render_to_string("includes/language_switch.html", request=request)
    assert 'action="/i18n/setlang/"' in html and 'name="csrfmiddlewaretoken"' in html
    assert 'name="next" value="/receipt/abc/?x=1"' in html
    assert '<option value="nl" lang="nl" selected>Nederlands</option>' in html
    assert '<option value="en" lang="en">English</option>' in html
    assert ">Wisselen</button>" in html


def test_an_action_on_the_exceptions_queue_answers_a_dutch_operator_in_dutch(
    client_for, operator, world
):
    _prefer(operator, "nl")
    record = world["exception"]
    response = client_for(operator).post(
        url("exception_resolve", record.public_id), {"note": ""}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "Een notitie is verplicht om een uitzondering af te handelen." in html
    assert ">Afhandelen</button>" in html and ">Aan mij toewijzen</button>" in html
