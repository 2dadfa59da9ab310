"""Drivers read their receipt in English, Dutch, German or French (by Accept-Language or the
switch on the page); the staff pages stay English or Dutch whatever the browser asks for."""

import pypdfium2 as pdfium
import pytest
from django.conf import settings
from django.urls import reverse

from sessions import receipts
from tests.dashboard.conftest import url

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("compiled_catalogues")]

# What a reader of each language must see on the receipt: the labels, the released note and
# the money in that language's number format (the paid session: € 4.50 of € 50.00 reserved).
EXPECTED = {
    "nl": (
        "Totaal betaald",
        "Bedrag excl. btw",
        "Inclusief 21% btw",
        "Bonnummer",
        "Laadpunt (EVSE)",
        "Btw-nummer",
        "Bij het begin van het laden is €\u00a050,00 op uw kaart gereserveerd",
        "de resterende €\u00a045,50 is vrijgegeven",
        "€\u00a04,50",
        "10,000 kWh",
    ),
    "de": (
        "Bezahlt gesamt",
        "Betrag ohne MwSt.",
        "Inkl. 21% MwSt.",
        "Belegnummer",
        "Ladepunkt (EVSE)",
        "USt-IdNr.",
        "Zu Beginn des Ladevorgangs wurden €\u00a050,00 auf Ihrer Karte reserviert",
        "die restlichen €\u00a045,50 wurden freigegeben",
        "€\u00a04,50",
        "10,000 kWh",
    ),
    "fr": (
        "Total payé",
        "Montant HT",
        "TVA 21% incluse",
        "Numéro de reçu",
        "Point de recharge (EVSE)",
        "Numéro de TVA",
        "Au début de la recharge, €\u00a050,00 ont été réservés sur votre carte",
        "le solde de €\u00a045,50 a été libéré",
        "€\u00a04,50",
        "10,000 kWh",
    ),
}


def link(session, name="receipts:public"):
    return reverse(name, args=[receipts.receipt_token(session)])


def _pdf_text(content: bytes) -> str:
    pdf = pdfium.PdfDocument(content)
    try:
        text = pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()
    return text


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("language", ["nl", "de", "fr"])
def test_a_drivers_browser_language_gives_the_receipt_page_in_that_language(client, paid, language):
    html = client.get(link(paid), HTTP_ACCEPT_LANGUAGE=f"{language},en;q=0.5").content.decode()
    assert f'<html lang="{language}"' in html
    for text in EXPECTED[language]:
        assert text in html, text
    assert "Total paid" not in html and "was released" not in html


@pytest.mark.parametrize("language", ["nl", "de", "fr"])
def test_the_pdf_and_the_text_receipt_are_built_in_the_drivers_language(client, paid, language):
    pdf = client.get(link(paid, "receipts:pdf"), HTTP_ACCEPT_LANGUAGE=language)
    text = client.get(link(paid, "receipts:text"), HTTP_ACCEPT_LANGUAGE=language)
    # Both wrap the long note over lines; PDFium reads the no-break space as a plain one.
    pdf_text, plain = _words(_pdf_text(pdf.content)), _words(text.content.decode())
    for expected in EXPECTED[language]:
        assert _words(expected) in pdf_text, expected
        assert _words(expected) in plain, expected
    assert "Total paid" not in pdf_text + plain


def test_a_vat_rate_with_a_fraction_has_the_languages_decimal_sign(client, paid):
    paid.tariff = (paid.tariff or {}) | {"vat_rate_bp": 950}
    paid.save(update_fields=["tariff"])
    assert "VAT 9.5% included" in client.get(link(paid)).content.decode()
    assert (
        "Inclusief 9,5% btw" in client.get(link(paid), HTTP_ACCEPT_LANGUAGE="nl").content.decode()
    )


def test_the_drivers_switch_offers_four_languages_and_its_choice_outlasts_the_browsers(
    client, paid
):
    page = link(paid)
    html = client.get(page, HTTP_ACCEPT_LANGUAGE="nl").content.decode()
    for code, name in (
        ("en", "English"),
        ("nl", "Nederlands"),
        ("de", "Deutsch"),
        ("fr", "Français"),
    ):
        assert f'value="{code}" lang="{code}"' in html and f">{name}</option>" in html
    response = client.post(reverse("set_language"), {"language": "de", "next": page})
    assert response.status_code == 302 and response["Location"] == page
    html = client.get(page, HTTP_ACCEPT_LANGUAGE="nl").content.decode()
    assert "Bezahlt gesamt" in html and '<option value="de" lang="de" selected>' in html
    client.post(reverse("set_language"), {"language": "fr", "next": page})
    lookup = client.get(reverse("receipts:lookup")).content.decode()
    assert "Retrouver votre reçu de recharge" in lookup and "Quatre derniers chiffres" in lookup


def test_a_lookup_error_and_the_emails_subject_follow_the_drivers_language(
    client, paid, mailoutbox
):
    data = {"site": str(paid.site.public_id), "date": "2026-03-01", "amount": "9.99"}
    html = client.post(
        reverse("receipts:lookup"), data | {"last4": "0000"}, HTTP_ACCEPT_LANGUAGE="de"
    ).content.decode()
    assert "Zu diesen Angaben konnten wir keinen eindeutigen Beleg finden" in html
    response = client.post(
        link(paid, "receipts:email"), {"email": "driver@example.com"}, HTTP_ACCEPT_LANGUAGE="nl"
    )
    assert "De bon is verstuurd naar driver@example.com." in response.content.decode()
    (mail,) = mailoutbox
    assert mail.subject.startswith("Uw laadbon S")
    (_name, content, _mimetype) = mail.attachments[0]
    assert "Totaal betaald" in _pdf_text(content)


def test_a_vat_number_refused_on_the_invoice_form_is_explained_in_french(client, paid):
    response = client.post(
        link(paid, "receipts:invoice"),
        {
            "company_name": "Société Exemple",
            "vat_number": "XX123",
            "address": "1 rue de la Paix, Paris",
            "email": "compta@example.com",
        },
        HTTP_ACCEPT_LANGUAGE="fr",
    )
    html = response.content.decode()
    assert "Le numéro de TVA doit commencer par un code pays de l&#x27;UE" in html


@pytest.mark.parametrize("language", ["de", "fr"])
def test_a_staff_page_asked_for_in_german_or_french_stays_english(
    client, client_for, viewer, world, language
):
    login = client.get(url("login"), HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert '<html lang="en' in login and "<h1>Log in</h1>" in login
    staff = client_for(viewer)
    html = staff.get(url("overview"), HTTP_ACCEPT_LANGUAGE=language).content.decode()
    assert '<html lang="en' in html and ">Overview<" in html
    # A choice made on a driver page (the same cookie) does not reach the staff pages either.
    staff.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    html = staff.get(url("overview")).content.decode()
    assert '<html lang="en' in html and ">Overview<" in html


def test_the_staff_header_offers_only_english_and_dutch(client_for, viewer, world):
    html = client_for(viewer).get(url("overview"), HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert '<option value="en" lang="en"' in html and '<option value="nl" lang="nl"' in html
    assert 'value="de"' not in html and 'value="fr"' not in html
    response = client_for(viewer).post(url("set_staff_language"), {"language": "de"})
    assert response.status_code == 400
