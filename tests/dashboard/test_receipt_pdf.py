"""The PDF receipt, rendered to an image by PDFium (pypdfium2) and read back as text."""

from pathlib import Path

import pypdfium2 as pdfium
import pytest
from django.urls import reverse

from sessions import receipts

pytestmark = pytest.mark.django_db

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

LEGAL_FIELDS = (
    "Laadpaal Exploitatie B.V.",
    "Herengracht 100",
    "1015 BS Amsterdam",
    "VAT number: NL123456789B01",
    "Receipt S",
    "Depot Utrecht",
    "NL*EVP*E1234",
    "10.000 kWh",
    "VAT 21% included",
    "€ 0.78",
    "Total paid",
    "€ 4.50",
    "Visa 4111 **** **** 4242",
    "Authorised",
    "€ 50.00",
    "the remaining € 45.50",
    "CARDHOLDER COPY",
    "2026-03-02 00:40 CET",
)


@pytest.fixture
def open_pdf():
    opened = []

    def open_(client, session) -> pdfium.PdfDocument:
        url = reverse("receipts:pdf", args=[receipts.receipt_token(session)])
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
        opened.append(pdfium.PdfDocument(response.content))
        return opened[-1]

    yield open_
    for pdf in opened:
        pdf.close()


def _text(page) -> str:
    # PDFium gives the no-break space of the money format as a plain one.
    return page.get_textpage().get_text_range().replace("\u00a0", " ").replace("\r", "")


def test_the_pdf_is_one_page_with_every_legal_field(client, paid, open_pdf):
    pdf = open_pdf(client, paid)
    assert len(pdf) == 1
    text = _text(pdf[0])
    for field in LEGAL_FIELDS:
        assert field in text, field
    assert "MERCHANT COPY" not in text and "PRE-AUTH" not in text


def test_the_pdf_renders_to_an_image_with_the_qr_code_in_its_corner(
    client, paid, open_pdf, tmp_path
):
    page = open_pdf(client, paid)[0]
    width, height = page.get_size()
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    image = page.render(scale=1.5).to_pil().convert("L")
    # For the issue's closing note, beside the browser tests' screenshots.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image.save(SCREENSHOTS / "receipt-pdf-en.png")
    # The QR code (top right, 32 mm square from 18 mm off the right edge): dark and light
    # modules in about equal parts. The rest of the page is mostly white paper.
    mm = image.width / 210
    corner = image.crop((int(160 * mm), int(14 * mm), int(192 * mm), int(46 * mm)))
    dark = sum(1 for p in corner.get_flattened_data() if p < 128) / (corner.width * corner.height)
    assert 0.3 < dark < 0.7
    body = image.crop((0, int(60 * mm), image.width, image.height))
    body_dark = sum(1 for p in body.get_flattened_data() if p < 128) / (body.width * body.height)
    assert 0.005 < body_dark < 0.2  # text was drawn, and the page is not a black box


def test_a_long_terminal_ticket_is_cut_so_the_receipt_stays_one_page(client, paid, open_pdf):
    from sessions.models import DeviceMessage

    ticket = DeviceMessage.objects.get(target="PrinterReceipt", transaction__operation="capture")
    ticket.lines = [f"ticket line {n}" for n in range(200)]
    ticket.save()
    pdf = open_pdf(client, paid)
    assert len(pdf) == 1
    text = _text(pdf[0])
    assert "ticket line 0" in text and "ticket line 199" not in text
    assert "(ticket continues on the receipt page)" in text


def test_without_the_dejavu_fonts_the_pdf_still_renders_with_a_core_font(
    client,
    paid,
    settings,
    tmp_path,
    open_pdf,
):
    settings.EVPAY_RECEIPT_FONT_DIR = str(tmp_path)  # no fonts there
    text = _text(open_pdf(client, paid)[0])
    assert "EUR 4.50" in text and "NL123456789B01" in text
