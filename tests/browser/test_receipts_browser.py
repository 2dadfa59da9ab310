"""A driver finds their receipt in a real browser, by the QR link and by the lookup form."""

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

from evpay.models import AuditEvent
from sessions import receipts
from sessions.models import InvoiceRequest
from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def phone(browser, live_server):
    """A driver's phone: narrow, touch, English."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        locale="en-GB",
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def _fill_lookup(page, site, **values):
    data = {"date": "2026-03-01", "amount": "4.50", "last4": "4242"} | values
    page.get_by_label("Charging location").select_option(label=site.name)
    page.get_by_label("Date of charging").fill(data["date"])
    page.get_by_label("Amount paid").fill(data["amount"])
    page.get_by_label("Last four digits of the card").fill(data["last4"])
    page.get_by_role("button", name="Find my receipt").click()


def test_staff_show_the_qr_code_and_the_driver_opens_its_link_on_the_phone(
    page, phone, login, viewer, screenshot
):
    session = f.make_paid_session()
    login(page, viewer)
    page.goto(f"/sessions/{session.public_id}/")
    page.get_by_text("Driver's receipt link and QR code").click()
    qr = page.locator("#driver-receipt-link figure.qr svg")
    expect(qr).to_be_visible()
    assert qr.bounding_box()["width"] >= 100  # big enough to scan from a screen
    url = page.locator("#driver-receipt-url").get_attribute("href")
    assert url.endswith(f"/r/{receipts.receipt_token(session)}/")

    # What the QR code holds, opened on the driver's phone without any login.
    phone.goto(url)
    expect(phone.locator("#receipt-seller")).to_have_text("Laadpaal Exploitatie B.V.")
    expect(phone.locator("#receipt-vat-number")).to_have_text("NL123456789B01")
    expect(phone.locator("#receipt-total")).to_have_text("€\u00a04.50")
    expect(phone.locator("#receipt-card")).to_have_text("Visa 4111 **** **** 4242")
    expect(phone.locator("#receipt-released-note")).to_contain_text("€\u00a045.50 was released")
    assert phone.evaluate("document.documentElement.lang") == "en"
    # Fits the phone: no sideways scrolling.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 391
    screenshot(phone, "receipt-driver-en")

    with phone.expect_download() as download:
        phone.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == f"receipt-S{session.site_id}-000001.pdf"


def test_a_driver_finds_the_receipt_by_lookup_emails_it_and_asks_for_an_invoice(phone, screenshot):
    session = f.make_paid_session()
    phone.goto("/receipt/")
    expect(phone.get_by_role("heading", name="Paid with your phone or watch?")).to_be_visible()
    screenshot(phone, "receipt-lookup-en")
    _fill_lookup(phone, session.site)
    expect(phone).to_have_url(re.compile(rf"/r/{re.escape(receipts.receipt_token(session))}/$"))
    expect(phone.locator("#receipt-number")).to_have_text(f"S{session.site_id}-000001")

    phone.get_by_label("E-mail address").fill("driver@example.com")
    phone.get_by_role("button", name="Send the PDF").click()
    expect(phone.locator("#email-status")).to_have_text(
        "The receipt was sent to driver@example.com."
    )
    (message,) = mail.outbox
    assert message.to == ["driver@example.com"]
    assert message.attachments[0][1].startswith(b"%PDF")

    phone.get_by_label("Company name").fill("Acme Logistics B.V.")
    phone.get_by_label("VAT number").fill("NL123456789B01")
    phone.get_by_label("Company address").fill("Industrieweg 5\n1234 AB Utrecht")
    phone.get_by_label("Send the invoice to").fill("finance@acme.example")
    phone.get_by_role("button", name="Request the invoice").click()
    expect(phone.locator("#invoice-status")).to_contain_text("The invoice will be sent to")
    invoice = InvoiceRequest.objects.get()
    assert (invoice.session_id, invoice.company_name) == (session.pk, "Acme Logistics B.V.")
    assert AuditEvent.objects.filter(action="invoice.requested").count() == 1


def test_a_wrong_lookup_reveals_nothing_and_the_limit_holds(phone, settings, screenshot):
    settings.EVPAY_RECEIPT_LOOKUP_LIMIT = 3
    session = f.make_paid_session()
    phone.goto("/receipt/")
    _fill_lookup(phone, session.site, last4="4243")
    wrong = phone.locator("#lookup-status").inner_text()
    assert wrong.startswith("We could not find one receipt for these details.")
    assert "/r/" not in phone.content() and "4111" not in phone.content()

    # Another session with the same day, amount and last four: the same words.
    f.make_session(
        session.connector,
        requested_at=session.requested_at,
        closed_at=session.closed_at,
        pan_last4="4242",
    )
    _fill_lookup(phone, session.site)
    assert phone.locator("#lookup-status").inner_text() == wrong
    screenshot(phone, "receipt-lookup-no-match-en")

    # The third try is the last this address gets; the right answer is then refused too.
    _fill_lookup(phone, session.site, last4="0000")
    _fill_lookup(phone, session.site)
    expect(phone.locator("#lookup-status")).to_contain_text("Too many lookups")
    assert "/r/" not in phone.url


@pytest.fixture
def phone_in(browser, live_server):
    """A driver's phone whose browser asks for the given language (Accept-Language)."""
    contexts = []

    def open_(locale):
        context = browser.new_context(
            base_url=live_server.url,
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            locale=locale,
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_
    for context in contexts:
        context.close()


def test_a_dutch_driver_finds_the_receipt_in_dutch_and_switches_to_german_and_french(
    phone_in, screenshot
):
    session = f.make_paid_session()
    phone = phone_in("nl-NL")
    phone.goto("/receipt/")
    expect(phone.get_by_role("heading", name="Betaald met uw telefoon of horloge?")).to_be_visible()
    phone.get_by_label("Laadlocatie").select_option(label=session.site.name)
    phone.get_by_label("Datum van het laden").fill("2026-03-01")
    phone.get_by_label("Betaald bedrag").fill("4,50")  # the Dutch decimal comma is understood
    phone.get_by_label("Laatste vier cijfers van de kaart").fill("4242")
    phone.get_by_role("button", name="Mijn bon zoeken").click()
    expect(phone).to_have_url(re.compile(rf"/r/{re.escape(receipts.receipt_token(session))}/$"))
    assert phone.evaluate("document.documentElement.lang") == "nl"
    expect(phone.locator("#receipt-total")).to_have_text("€\u00a04,50")
    expect(phone.locator("#receipt-released-note")).to_contain_text(
        "de resterende €\u00a045,50 is vrijgegeven"
    )
    assert phone.evaluate("document.documentElement.scrollWidth") <= 391
    screenshot(phone, "receipt-driver-nl")

    for code, total_label, note, name in (
        ("de", "Bezahlt gesamt", "die restlichen €\u00a045,50 wurden freigegeben", "de"),
        ("fr", "Total payé", "le solde de €\u00a045,50 a été libéré", "fr"),
    ):
        phone.locator("#public-language-select").select_option(code)
        phone.get_by_role("button", name={"de": "Wisselen", "fr": "Wechseln"}[code]).click()
        expect(phone.locator("html")).to_have_attribute("lang", code)
        expect(phone.locator("main")).to_contain_text(total_label)
        expect(phone.locator("#receipt-released-note")).to_contain_text(note)
        screenshot(phone, f"receipt-driver-{name}")
