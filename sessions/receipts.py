"""The cardholder's receipt for a settled session: one builder, three renderings (HTML through
templates/receipts/body.html, plain text, a one-page PDF), a receipt number and a public link.

What a receipt carries (issue #17): the seller (legal name, address, VAT number per site),
the receipt number, date and time in the site's zone, location and EVSE id, energy, duration,
the prices applied from the session's tariff snapshot, VAT rate and amount, total paid, card
brand and masked PAN, the authorised amount and what was released. Of the terminal's own
tickets only the cardholder copy of the capture is reproduced: the merchant and journal copies
are the operator's, and the pre-authorisation ticket shows an amount the driver did not pay.

Receipt numbers: PREFIX-000001, sequential per site (Site.receipt_prefix, "S<site id>" when
empty), given when a receipt is first produced (staff page, public page, download, e-mail)
and the same ever after. The site's counter is incremented under its row lock in the same
transaction as the IssuedReceipt row, so there are no gaps and no repeats.

PDF: fpdf2 (pure Python, maintained) with DejaVu Sans for the euro sign and accents; where
the font is missing it falls back to the core Helvetica and writes "EUR" for "€".
"""

from __future__ import annotations

import io
import logging
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import segno
from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from evpay import audit
from evpay.money import format_money, round_half_up
from evpay.templatetags.evpay_tags import brand_name, site_zone
from sessions.models import (
    ChargingSession,
    DeviceMessage,
    IssuedReceipt,
    Operation,
    SessionState,
)
from terminals.models import Site
from terminals.opi.messages import OutDeviceTarget

log = logging.getLogger(__name__)

WIDTH = 40
TOKEN_SALT = "evpay.receipts.public-link"


def has_receipt(session: ChargingSession) -> bool:
    """A receipt is proof of payment: the session closed with money captured."""
    return session.state == SessionState.CLOSED and session.captured_amount_minor > 0


# --------------------------------------------------------------------------- public link


def receipt_token(session: ChargingSession) -> str:
    """An unguessable link token: the session's id signed with SECRET_KEY and our salt. No
    expiry: a receipt stays valid as long as the books are kept; rotating SECRET_KEY (with
    SECRET_KEY_FALLBACKS to keep old links) is the way to withdraw them all."""
    return signing.Signer(salt=TOKEN_SALT).sign(session.public_id.hex)


def session_for_token(token: str) -> ChargingSession | None:
    """The settled session a token names, or None for a tampered, unknown or unpaid one."""
    if not isinstance(token, str) or len(token) > 200:
        return None
    try:
        hex_id = signing.Signer(salt=TOKEN_SALT).unsign(token)
    except signing.BadSignature:
        return None
    session = (
        ChargingSession.objects.select_related("site", "terminal", "connector")
        .filter(public_id=hex_id if len(hex_id) == 32 else None)
        .first()
    )
    return session if session is not None and has_receipt(session) else None


def public_url(session: ChargingSession, request=None) -> str:
    """The driver's link, absolute: EVPAY_PUBLIC_BASE_URL when set (the address drivers can
    reach, which may not be the one staff use), else the host of the current request."""
    path = reverse("receipts:public", args=[receipt_token(session)])
    base = settings.EVPAY_PUBLIC_BASE_URL
    if base:
        return base.rstrip("/") + path
    if request is not None:
        return request.build_absolute_uri(path)
    return path


def qr_svg(url: str) -> str:
    return segno.make(url, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff")


def qr_png(url: str, scale: int = 6) -> bytes:
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="png", scale=scale, border=2)
    return out.getvalue()


# --------------------------------------------------------------------------- receipt number


def issue_receipt(session: ChargingSession, actor: audit.Actor) -> IssuedReceipt:
    """The session's receipt number, given once (see the module docstring)."""
    existing = IssuedReceipt.objects.select_related("site").filter(session=session).first()
    if existing is not None:
        return existing
    if not has_receipt(session):
        raise ValueError("only a session settled with a capture has a receipt")
    with transaction.atomic():
        site = Site.objects.select_for_update().get(pk=session.site_id)
        # Re-read under the site's lock: another request may have issued it meanwhile.
        existing = IssuedReceipt.objects.filter(session=session).first()
        if existing is not None:
            existing.site = site
            return existing
        site.receipt_counter += 1
        Site.objects.filter(pk=site.pk).update(receipt_counter=site.receipt_counter)
        issued = IssuedReceipt.objects.create(
            session=session, site=site, number=site.receipt_counter
        )
        audit.record(
            actor,
            issued,
            "receipt.issued",
            session=session,
            data={"number": issued.label},
        )
    return issued


# --------------------------------------------------------------------------- the receipt


@dataclass
class Line:
    label: str
    detail: str
    amount: str


@dataclass
class Receipt:
    session: ChargingSession
    number: str
    seller: list[str] = field(default_factory=list)  # legal name, then address lines
    vat_number: str = ""
    location: list[str] = field(default_factory=list)
    evse_id: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    vat: tuple[str, str] = ("", "")
    net: str = ""
    total: str = ""
    card: str = ""
    authorised: str = ""
    released: str = ""
    ticket: list[str] = field(default_factory=list)  # the terminal's cardholder copy
    link: str = ""

    @property
    def released_note(self) -> str:
        if self.released:
            return _(
                "%(authorised)s was reserved on your card when charging started; you paid "
                "%(total)s and the remaining %(released)s was released."
            ) % {"authorised": self.authorised, "total": self.total, "released": self.released}
        return _("%(authorised)s was reserved on your card when charging started.") % {
            "authorised": self.authorised
        }


def cardholder_ticket(session: ChargingSession) -> list[str]:
    """The terminal's cardholder copy of the capture, as printed; [] when it sent none."""
    messages = DeviceMessage.objects.filter(
        transaction__session=session,
        transaction__operation=Operation.CAPTURE,
        target=OutDeviceTarget.PRINTER_RECEIPT,
    ).order_by("transaction_id", "seq")
    return [str(line) for m in messages for line in m.lines]


def _local(value: datetime | None, site) -> str:
    if value is None:
        return "—"
    return timezone.localtime(value, site_zone(site)).strftime("%Y-%m-%d %H:%M %Z")


def _duration(seconds: int) -> str:
    minutes = max(0, seconds) // 60
    return f"{minutes // 60}:{minutes % 60:02d}"


def _seconds(start: datetime | None, end: datetime | None) -> int:
    if start is None or end is None or end <= start:
        return 0
    return int((end - start).total_seconds())


def _number(value, places: int) -> str:
    """In the active language's format (10.000 in English, 10,000 in Dutch), no grouping."""
    return formats.number_format(Decimal(str(value)), places, use_l10n=True, force_grouping=False)


def _kwh(energy_wh: int) -> str:
    return _number(Decimal(energy_wh) / 1000, 3)


def _price_lines(session: ChargingSession) -> list[Line]:
    """The tariff components as sessions.pricing applied them, from the snapshot at start."""
    tariff, cur = session.tariff or {}, session.currency
    money = lambda minor: format_money(minor, cur)  # noqa: E731
    lines = []
    if tariff.get("start_fee_minor") or session.cost_start_minor:
        lines.append(Line(_("Start fee"), "", money(session.cost_start_minor)))
    kwh = _kwh(session.energy_wh)
    lines.append(
        Line(
            _("Energy"),
            _("%(kwh)s kWh × %(price)s/kWh")
            % {"kwh": kwh, "price": money(tariff.get("price_per_kwh_minor", 0))},
            money(session.cost_energy_minor),
        )
    )
    if tariff.get("price_per_minute_minor") or session.cost_time_minor:
        minutes = _seconds(session.charging_started_at, session.charging_ended_at) / 60
        lines.append(
            Line(
                _("Charging time"),
                _("%(minutes)s min × %(price)s/min")
                % {
                    "minutes": _number(minutes, 1),
                    "price": money(tariff["price_per_minute_minor"]),
                },
                money(session.cost_time_minor),
            )
        )
    if tariff.get("idle_fee_per_minute_minor") or session.cost_idle_minor:
        grace = tariff.get("idle_grace_minutes", 0)
        idle = _seconds(session.charging_ended_at, session.unplugged_at) / 60 - grace
        lines.append(
            Line(
                _("Idle fee"),
                _("%(minutes)s min after %(grace)s min grace × %(price)s/min")
                % {
                    "minutes": _number(max(0.0, idle), 1),
                    "grace": grace,
                    "price": money(tariff["idle_fee_per_minute_minor"]),
                },
                money(session.cost_idle_minor),
            )
        )
    return lines


def build_receipt(session: ChargingSession, issued: IssuedReceipt, link: str = "") -> Receipt:
    site, cur = session.site, session.currency
    total = session.captured_amount_minor
    receipt = Receipt(session=session, number=issued.label, link=link)
    receipt.seller = [
        site.receipt_name,
        *(line.strip() for line in site.receipt_address.splitlines() if line.strip()),
    ]
    receipt.vat_number = site.vat_number
    receipt.location = [site.name, *(x.strip() for x in site.address.splitlines() if x.strip())]
    receipt.evse_id = session.connector.evse_id
    started = session.charging_started_at or session.authorised_at or session.requested_at
    ended = session.unplugged_at or session.charging_ended_at or session.closed_at
    receipt.facts = [
        (_("Receipt number"), issued.label),
        (_("Date"), _local(session.closed_at or session.requested_at, site)),
        (_("Location"), ", ".join(receipt.location)),
        (_("Charge point (EVSE)"), session.connector.evse_id),
        (_("Started"), _local(started, site)),
        (_("Ended"), _local(ended, site)),
        (_("Duration (h:mm)"), _duration(_seconds(started, ended))),
        (_("Energy"), f"{_kwh(session.energy_wh)} kWh"),
    ]
    receipt.lines = _price_lines(session)
    rate = (session.tariff or {}).get("vat_rate_bp", 0)
    # The VAT in the amount actually paid: the priced VAT is of the cost total, and the two
    # differ only when staff settled a session for another amount.
    vat_minor = session.cost_vat_minor if session.cost_total_minor == total else None
    if vat_minor is None:
        r = Decimal(rate) / 10000
        vat_minor = round_half_up(Decimal(total) * r / (1 + r))
    receipt.vat = (
        # 9.5 in English, 9,5 in Dutch, German and French.
        _("VAT %(rate)s%% included") % {"rate": formats.localize(Decimal(rate) / 100)},
        format_money(vat_minor, cur),
    )
    receipt.net = format_money(total - vat_minor, cur)
    receipt.total = format_money(total, cur)
    receipt.card = f"{brand_name(session.card_brand)} {session.masked_pan}".strip()
    receipt.authorised = format_money(session.authorised_amount_minor, cur)
    released = session.authorised_amount_minor - total
    receipt.released = format_money(released, cur) if released > 0 else ""
    receipt.ticket = cardholder_ticket(session)
    return receipt


def receipt_for(session: ChargingSession, actor: audit.Actor, request=None) -> Receipt:
    """Issue (once) and build the receipt of a settled session, with its public link."""
    issued = issue_receipt(session, actor)
    return build_receipt(session, issued, link=public_url(session, request))


# --------------------------------------------------------------------------- text


def _pair(label: str, value: str, width: int = WIDTH) -> str:
    """Label left, value right; a value too long for the line goes under it, wrapped."""
    if len(label) + 1 + len(value) <= width:
        return f"{label}{' ' * (width - len(label) - len(value))}{value}"
    return "\n".join([label, *(line.rjust(width) for line in textwrap.wrap(value, width))])


def receipt_lines(receipt: Receipt) -> list[str]:
    lines = [*(h.center(WIDTH).rstrip() for h in receipt.seller)]
    if receipt.vat_number:
        lines.append((_("VAT number") + " " + receipt.vat_number).center(WIDTH).rstrip())
    lines += ["=" * WIDTH, _("RECEIPT").center(WIDTH).rstrip(), "=" * WIDTH]
    lines += [_pair(label, value) for label, value in receipt.facts]
    lines.append("-" * WIDTH)
    for line in receipt.lines:
        lines.append(_pair(line.label, line.amount))
        if line.detail:
            lines.append(f"  {line.detail}")
    lines.append("-" * WIDTH)
    lines.append(_pair(_("Total paid"), receipt.total))
    lines.append(_pair(receipt.vat[0], receipt.vat[1]))
    lines.append(_pair(_("Amount excl. VAT"), receipt.net))
    lines.append("-" * WIDTH)
    if receipt.card:
        lines.append(_pair(_("Card"), receipt.card))
    lines.append(_pair(_("Authorised"), receipt.authorised))
    if receipt.released:
        lines.append(_pair(_("Released"), receipt.released))
    lines += textwrap.wrap(receipt.released_note, WIDTH)
    if receipt.ticket:
        lines += ["-" * WIDTH, _("Terminal ticket (cardholder copy)") + ":", *receipt.ticket]
    if receipt.link:
        lines += ["-" * WIDTH, _("This receipt online") + ":", receipt.link]
    lines.append("=" * WIDTH)
    return lines


def render_text(receipt: Receipt) -> str:
    return "\n".join(receipt_lines(receipt)) + "\n"


# --------------------------------------------------------------------------- PDF

FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "M": "DejaVuSansMono.ttf"}


def _font_dir() -> Path | None:
    folder = Path(settings.EVPAY_RECEIPT_FONT_DIR)
    if all((folder / name).is_file() for name in FONT_FILES.values()):
        return folder
    return None


def render_pdf(receipt: Receipt) -> bytes:
    """An A4 page: seller, number and facts, the priced lines, VAT, total, card, the
    authorisation note, the cardholder ticket and the link's QR code. Never a second page:
    a ticket too long for the rest of the page is cut with a note (it is on the HTML page)."""
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    pdf.set_margins(18, 16, 18)
    pdf.add_page()
    pdf.set_title(f"{_('Receipt')} {receipt.number}")
    pdf.set_creator("evpay")
    folder = _font_dir()
    if folder is not None:
        pdf.add_font("Sans", "", str(folder / FONT_FILES[""]))
        pdf.add_font("Sans", "B", str(folder / FONT_FILES["B"]))
        pdf.add_font("Mono", "", str(folder / FONT_FILES["M"]))
        sans, mono = "Sans", "Mono"

        def text(value: str) -> str:
            return value

    else:
        log.warning("receipt PDF: DejaVu fonts not in %s, using Helvetica", folder)
        sans, mono = "Helvetica", "Courier"

        def text(value: str) -> str:
            value = value.replace("€\u00a0", "EUR ").replace("€", "EUR").replace("×", "x")
            return value.encode("latin-1", "replace").decode("latin-1")

    width = pdf.w - pdf.l_margin - pdf.r_margin
    if receipt.link:
        pdf.image(io.BytesIO(qr_png(receipt.link)), x=pdf.w - pdf.r_margin - 32, y=14, w=32)
    pdf.set_font(sans, "B", 14)
    pdf.cell(width - 36, 7, text(receipt.seller[0]), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(sans, "", 9)
    for line in receipt.seller[1:]:
        pdf.cell(width - 36, 4.5, text(line), new_x="LMARGIN", new_y="NEXT")
    if receipt.vat_number:
        pdf.cell(
            width - 36,
            4.5,
            text(f"{_('VAT number')}: {receipt.vat_number}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.set_y(max(pdf.get_y(), 48) + 4)
    pdf.set_font(sans, "B", 16)
    pdf.cell(width, 9, text(f"{_('Receipt')} {receipt.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

    def pair(label: str, value: str, bold: bool = False, size: float = 10):
        pdf.set_font(sans, "B" if bold else "", size)
        pdf.cell(width * 0.45, 5.5, text(label))
        pdf.cell(width * 0.55, 5.5, text(value), align="R", new_x="LMARGIN", new_y="NEXT")

    for label, value in receipt.facts:
        pair(label, value)
    pdf.ln(2)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(2)
    for line in receipt.lines:
        pdf.set_font(sans, "", 10)
        pdf.cell(width * 0.3, 5.5, text(line.label))
        pdf.set_font(sans, "", 8.5)
        pdf.cell(width * 0.5, 5.5, text(line.detail))
        pdf.set_font(sans, "", 10)
        pdf.cell(width * 0.2, 5.5, text(line.amount), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(2)
    pair(_("Total paid"), receipt.total, bold=True, size=12)
    pair(receipt.vat[0], receipt.vat[1])
    pair(_("Amount excl. VAT"), receipt.net)
    pdf.ln(2)
    if receipt.card:
        pair(_("Card"), receipt.card)
    pair(_("Authorised"), receipt.authorised)
    if receipt.released:
        pair(_("Released"), receipt.released)
    pdf.set_font(sans, "", 8.5)
    pdf.multi_cell(width, 4.5, text(receipt.released_note), new_x="LMARGIN", new_y="NEXT")
    if receipt.ticket:
        pdf.ln(3)
        pdf.set_font(sans, "B", 9)
        pdf.cell(
            width, 5, text(_("Terminal ticket (cardholder copy)")), new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_font(mono, "", 8)
        bottom = pdf.h - 22
        for index, line in enumerate(receipt.ticket):
            if pdf.get_y() + 8 > bottom and index < len(receipt.ticket) - 1:
                pdf.cell(width, 3.8, text(_("(ticket continues on the receipt page)")))
                pdf.ln(3.8)
                break
            pdf.cell(width, 3.8, text(line), new_x="LMARGIN", new_y="NEXT")
    if receipt.link:
        pdf.set_y(pdf.h - 18)
        pdf.set_font(sans, "", 7.5)
        pdf.cell(width, 4, text(f"{_('This receipt online')}: {receipt.link}"))
    return bytes(pdf.output())
