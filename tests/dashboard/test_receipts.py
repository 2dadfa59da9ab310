"""Receipt search, printable receipt, text and PDF downloads."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def test_receipt_search_by_date_amount_and_last_four(client_for, viewer):
    site = f.make_site("Harbour", time_zone="America/New_York")
    connector = f.make_connector(f.make_terminal(site))
    # 03:30 UTC on the 2nd is still the 1st in New York: the driver's day counts.
    at = datetime(2026, 3, 2, 3, 30, tzinfo=ZoneInfo("UTC"))
    hit = f.make_session(connector, requested_at=at, captured_amount_minor=1250, pan_last4="4242")
    f.make_session(
        connector, requested_at=at - timedelta(days=5), captured_amount_minor=1250, pan_last4="4242"
    )
    f.make_session(connector, requested_at=at, captured_amount_minor=999, pan_last4="4242")
    client = client_for(viewer)
    response = client.get(
        url("sessions:receipts"), {"date": "2026-03-01", "amount": "12.50", "last4": "4242"}
    )
    html = response.content.decode()
    assert html.count(url("sessions:receipt", hit.public_id)) == 1
    assert html.count("View</a>") == 1
    assert (
        client.get(
            url("sessions:receipts"), {"date": "2026-03-02", "last4": "4242", "amount": "12.50"}
        )
        .content.decode()
        .count("View</a>")
        == 0
    )


def test_receipt_search_explains_bad_input(client_for, viewer, world):
    html = (
        client_for(viewer)
        .get(url("sessions:receipts"), {"amount": "x", "last4": "12"})
        .content.decode()
    )
    assert "Enter an amount like 12.50; not searching by amount." in html
    assert "Enter the last 4 digits of the card; not searching by card." in html
    assert 'aria-invalid="true"' in html


def test_a_bad_receipt_date_is_named_and_the_other_fields_still_search(client_for, viewer, world):
    client = client_for(viewer)
    params = {"date": "2026-13-45", "last4": "1234"}
    html = client.get(url("sessions:receipts"), params).content.decode()
    assert "“2026-13-45” is not a date (use YYYY-MM-DD); not filtering by this date." in html
    assert str(world["closed"].public_id) in html
    fragment = client.get(url("sessions:receipts"), params, HTTP_HX_REQUEST="true")
    assert 'id="r-date-error" class="error" hx-swap-oob="true">“2026-13-45”' in (
        fragment.content.decode()
    )


def _cardholder_copy(world, lines=("CARDHOLDER COPY", "VISA **** 1234", "PAID EUR 4,50")):
    return f.make_receipt(world["capture"], lines=lines, seq=2, target="PrinterReceipt")


def test_printable_receipt_has_the_cardholder_ticket_breakdown_and_site_local_times(
    client_for, viewer, world
):
    session = world["closed"]
    _cardholder_copy(world)
    html = client_for(viewer).get(url("sessions:receipt", session.public_id)).content.decode()
    assert "Depot Utrecht" in html and "Laan 1<br>" in html
    assert "PAID EUR 4,50" in html and "Visa 4111 **** **** 1234" in html
    # The merchant copy (world's "Printer" ticket) is the operator's, not the driver's.
    assert "TOTAL EUR 4,50" not in html
    assert "VAT 21% included" in html and "€\u00a00.78" in html and "€\u00a04.50" in html
    assert " CET" in html or " CEST" in html


def test_receipt_as_text(client_for, viewer, world):
    _cardholder_copy(world)
    response = client_for(viewer).get(url("sessions:receipt_text", world["closed"].public_id))
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "Depot Utrecht" in text and "€\u00a04.50" in text and "PAID EUR 4,50" in text
    assert "TOTAL EUR 4,50" not in text


def test_receipt_as_pdf(client_for, viewer, world):
    response = client_for(viewer).get(url("sessions:receipt_pdf", world["closed"].public_id))
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="receipt-S{world["site"].pk}-000001.pdf"'
    )


def test_receipts_need_a_role(client_for, no_role_user, world):
    client = client_for(no_role_user)
    assert client.get(url("sessions:receipt_pdf", world["closed"].public_id)).status_code == 403
    assert client.get(url("sessions:receipts")).status_code == 403


def test_only_sessions_settled_with_a_capture_are_listed_as_receipts(client_for, viewer, world):
    connector = world["connectors"][0]
    settling = f.make_session(
        connector, state="settling", close_reason="", closed_at=None, captured_amount_minor=0
    )
    released = f.make_session(connector, close_reason="released", captured_amount_minor=0)
    client = client_for(viewer)
    html = client.get(url("sessions:receipts")).content.decode()
    assert url("sessions:receipt", world["closed"].public_id) in html
    for unpaid in (world["charging"], settling, released):
        assert str(unpaid.public_id) not in html
    assert "Paid" in html and "€\u00a00.00" not in html
    assert html.count("View</a>") == 1
    # Their receipt pages do not pretend either.
    for unpaid in (world["charging"], settling, released):
        for name in ("sessions:receipt", "sessions:receipt_text", "sessions:receipt_pdf"):
            assert client.get(url(name, unpaid.public_id)).status_code == 404
    detail = client.get(url("sessions:detail", world["charging"].public_id)).content.decode()
    assert url("sessions:receipt", world["charging"].public_id) not in detail
    assert "No receipt: only a session settled with a capture has one." in detail
