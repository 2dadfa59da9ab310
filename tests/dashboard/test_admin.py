"""Django admin: every model registered, financial rows read-only, API keys issued once."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from sessions.models import ApiKey
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db

REGISTERED = [
    "evpay.AuditEvent",
    "evpay.ExceptionRecord",
    "evpay.JobRun",
    "evpay.Heartbeat",
    "terminals.Site",
    "terminals.Terminal",
    "terminals.Connector",
    "terminals.TerminalStatusChange",
    "terminals.PeriodClosing",
    "terminals.ClosingBrandTotal",
    "terminals.MifareRead",
    "terminals.ChargePoint",
    "charging.Tariff",
    "charging.ChargingSession",
    "charging.TerminalTransaction",
    "charging.DeviceMessage",
    "charging.ApiKey",
    "charging.IdempotencyRecord",
    "charging.IssuedReceipt",
    "charging.InvoiceRequest",
    "charging.OcppMessage",
    "charging.OcppCommand",
]
READ_ONLY = [
    "evpay.AuditEvent",
    "charging.TerminalTransaction",
    "charging.DeviceMessage",
    "charging.ChargingSession",
    "terminals.ClosingBrandTotal",
    "charging.IssuedReceipt",
    "charging.InvoiceRequest",
    "charging.OcppMessage",
    "charging.OcppCommand",
]


def _admin_url(label, action="changelist", *args):
    app, model = label.split(".")
    return reverse(f"admin:{app}_{model.lower()}_{action}", args=args)


def test_every_model_is_registered():
    for label in REGISTERED:
        assert apps.get_model(label) in admin.site._registry, label


@pytest.mark.parametrize("label", REGISTERED)
def test_each_changelist_loads_for_admins_with_data(client_for, admin_user, world, label):
    response = client_for(admin_user).get(_admin_url(label))
    assert response.status_code == 200, label


@pytest.mark.parametrize("label", READ_ONLY)
def test_financial_rows_cannot_be_added_changed_or_deleted(rf, admin_user, label):
    request = rf.get("/")
    request.user = admin_user
    model_admin = admin.site._registry[apps.get_model(label)]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_transaction_detail_is_viewable_but_not_editable(client_for, admin_user, world):
    client = client_for(admin_user)
    change = _admin_url("charging.TerminalTransaction", "change", world["capture"].pk)
    response = client.get(change)
    assert response.status_code == 200 and b'name="_save"' not in response.content
    assert client.post(change, {"amount_minor": 1}).status_code == 403


ADMIN_PAGES = [
    url("admin:index"),
    _admin_url("terminals.Terminal"),
    _admin_url("evpay.JobRun", "change", 1),
    url("admin:login") + "?next=/admin/",
    "/admin/no-such-page/",
]


@pytest.mark.parametrize("persona", ["operator", "viewer"])
@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_operators_and_viewers_get_a_403_page_from_the_admin_not_a_login_loop(
    request, client_for, persona, page
):
    client = client_for(request.getfixturevalue(persona))
    # follow=True: before the fix /admin/ -> /admin/login/ -> /login/ -> /admin/ ... raised
    # RedirectCycleError here.
    response = client.get(page, follow=True)
    assert response.status_code == 403 and response.redirect_chain == []
    html = response.content.decode()
    assert "Not allowed" in html and "The Django admin is for the admin role only." in html


def test_anonymous_users_are_sent_from_the_admin_to_the_login_page_with_next(client):
    response = client.get(_admin_url("terminals.Terminal"), follow=True)
    assert response.status_code == 200
    landed = response.redirect_chain[-1][0]
    assert landed == "/login/?next=/admin/terminals/terminal/"


def test_admins_still_use_the_admin(client_for, admin_user):
    client = client_for(admin_user)
    assert client.get(url("admin:index")).status_code == 200
    login = client.get(url("admin:login") + "?next=/admin/terminals/", follow=True)
    assert login.status_code == 200 and login.redirect_chain[-1][0] == "/admin/terminals/"


def test_creating_an_api_key_shows_the_raw_key_once_and_stores_only_its_hash(
    client_for, admin_user, world
):
    client = client_for(admin_user)
    add = client.get(_admin_url("charging.ApiKey", "add"))
    assert b"key_hash" not in add.content
    response = client.post(
        _admin_url("charging.ApiKey", "add"),
        {"name": "Depot charger", "site": world["site"].pk},
        follow=True,
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(name="Depot charger")
    html = response.content.decode()
    raw = html.split("API key for Depot charger: ")[1].split(" ")[0]
    assert ApiKey.authenticate(raw) == key
    assert key.key_hash not in html
    change = client.get(_admin_url("charging.ApiKey", "change", key.pk)).content.decode()
    assert raw not in change and key.key_hash not in change and "key_hash" not in change


def test_a_sites_receipt_details_are_edited_in_the_admin_and_a_bad_vat_number_is_refused(
    client_for, admin_user, world
):
    site = world["site"]
    client = client_for(admin_user)
    change = _admin_url("terminals.Site", "change", site.pk)
    assert "Receipts" in client.get(change).content.decode()
    data = {
        "name": site.name,
        "address": site.address,
        "time_zone": site.time_zone,
        "currency": site.currency,
        "legal_name": "Laadpaal Exploitatie B.V.",
        "legal_address": "Herengracht 100",
        "vat_number": "NL12345678B01",
        "receipt_prefix": "UTR",
    }
    refused = client.post(change, data)
    assert refused.status_code == 200
    assert "is not in the form of a NL VAT number" in refused.content.decode()
    assert client.post(change, data | {"vat_number": "NL123456789B01"}).status_code == 302
    site.refresh_from_db()
    assert (site.vat_number, site.receipt_prefix) == ("NL123456789B01", "UTR")
