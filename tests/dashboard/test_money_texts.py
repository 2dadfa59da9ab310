"""Money reaches staff as money: exception texts, timeline reasons and the tariff admin never
show minor units or basis points (issue 16: "Settling 340 EUR failed" meant € 3.40)."""

from decimal import Decimal

import pytest
from django.urls import reverse

from evpay.audit import Actor
from evpay.models import AuditEvent, ExceptionRecord
from sessions import services
from sessions.models import Operation, SessionState, Tariff
from sessions.services import authorisation, recovery, settlement
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db
JOB = Actor.job("test")


def _only(kind):
    return ExceptionRecord.objects.get(kind=kind)


def test_a_failed_capture_names_its_amount_as_money(world):
    session = world["charging"]
    auth = f.make_tx(session, Operation.AUTHORISE)
    capture = f.make_tx(
        session, Operation.CAPTURE, amount_minor=340, original=auth, outcome="declined"
    )
    settlement._settlement_exception(session, capture, "the terminal answered Failure: no")
    text = _only("capture_failed").what_happened
    assert text == "The capture of €\u00a03.40 failed: the terminal answered Failure: no."


def test_a_stranded_authorisation_names_the_reserved_amount_as_money(world):
    session = world["closed"]
    authorisation._stranded_authorisation(session, world["auth"])
    text = _only("stranded_auth").what_happened
    assert text.startswith("€\u00a050.00 was reserved on card")
    assert "5000" not in text


def test_an_unknown_outcome_names_the_requested_amount_as_money(world):
    tx = f.make_tx(world["charging"], Operation.AUTHORISE, state="unknown", outcome="unknown")
    recovery._unknown_exception(tx)
    text = _only("unknown_outcome").what_happened
    assert text.startswith("The authorise request for €\u00a050.00 was sent at")
    assert "5000" not in text


def test_the_timeline_says_what_a_session_was_priced_at_as_money(world):
    session = world["charging"]
    services.mark_unplugged(session, JOB, enqueue=False)
    session.refresh_from_db()
    assert session.state == SessionState.SETTLING and session.cost_total_minor > 0
    event = AuditEvent.objects.get(session_ref=session.public_id, to_state="settling")
    money = f"€\u00a0{Decimal(session.cost_total_minor).scaleb(-2):.2f}"
    assert event.reason.endswith(f"; priced {money}")


# --------------------------------------------------------------------------- tariff admin


def _tariff_url(action, *args):
    return reverse(f"admin:charging_tariff_{action}", args=args)


def _post_data(site, **changes):
    return {
        "site": site.pk,
        "name": "Night",
        "active": "",
        "start_fee": "0.50",
        "price_per_kwh": "0.39",
        "price_per_minute": "0",
        "idle_fee_per_minute": "0.10",
        "authorise_amount": "50",
        "vat_rate": "9.5",
        "idle_grace_minutes": "30",
        "max_session_minutes": "720",
        "start_timeout_minutes": "10",
    } | changes


def test_the_tariff_list_shows_money_and_vat_as_percent(client_for, admin_user, world):
    html = client_for(admin_user).get(_tariff_url("changelist")).content.decode()
    assert "€\u00a00.40" in html and "€\u00a00.50" in html and "€\u00a050.00" in html
    assert "21%" in html
    assert ">2100<" not in html and ">5000<" not in html


def test_a_tariff_is_edited_in_money_and_stored_in_minor_units(client_for, admin_user, world):
    client = client_for(admin_user)
    tariff = Tariff.objects.get(site=world["site"])
    form = client.get(_tariff_url("change", tariff.pk)).content.decode()
    assert 'name="price_per_kwh" value="0.40"' in form
    assert 'name="vat_rate" value="21"' in form and "in EUR, VAT incl." in form
    assert 'name="price_per_kwh_minor"' not in form and 'name="vat_rate_bp"' not in form
    response = client.post(_tariff_url("add"), _post_data(world["site"]))
    assert response.status_code == 302, response.content.decode()[-3000:]
    night = Tariff.objects.get(name="Night")
    stored = (
        night.start_fee_minor,
        night.price_per_kwh_minor,
        night.price_per_minute_minor,
        night.idle_fee_per_minute_minor,
        night.authorise_amount_minor,
        night.vat_rate_bp,
    )
    assert stored == (50, 39, 0, 10, 5000, 950)


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("price_per_kwh", "0.395", "EUR has 2 decimal(s) at most."),
        ("authorise_amount", "0", "The amount reserved at start must be above 0."),
        ("vat_rate", "9.125", "Ensure that there are no more than 2 decimal places."),
        ("vat_rate", "101", "Ensure this value is less than or equal to 100."),
    ],
)
def test_tariff_money_that_does_not_fit_the_currency_is_refused(
    client_for, admin_user, world, field, value, error
):
    response = client_for(admin_user).post(
        _tariff_url("add"), _post_data(world["site"], **{field: value})
    )
    assert response.status_code == 200 and error in response.content.decode()
    assert not Tariff.objects.filter(name="Night").exists()


def test_session_and_request_lists_in_the_admin_show_money(client_for, admin_user, world):
    client = client_for(admin_user)
    sessions = client.get(reverse("admin:charging_chargingsession_changelist")).content.decode()
    assert "€\u00a04.50" in sessions
    requests = client.get(reverse("admin:charging_terminaltransaction_changelist")).content.decode()
    assert "€\u00a04.50" in requests and "€\u00a050.00" in requests


@pytest.mark.parametrize("currency", ["EUR", "JPY", "KWD", "GBP"])
def test_the_exports_integer_formatter_writes_what_to_decimal_string_writes(currency):
    from evpay.money import decimal_string_formatter, to_decimal_string

    formatted = decimal_string_formatter(currency)
    amounts = [*range(0, 2000), 99_999, 100_000, 123_456_789, 2**31 - 1, -1, -250]
    assert [formatted(a) for a in amounts] == [to_decimal_string(a, currency) for a in amounts]
