"""Receipts: the terminal's ticket lines plus our cost breakdown, as text and as PDF.

No PDF library is installed, so ``render_pdf`` writes a minimal single-page PDF by hand:
monospaced lines in Courier (one of the 14 standard fonts every reader has, so nothing is
embedded). That is all a receipt needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from django.utils import timezone

from evpay.money import format_money
from sessions.models import ChargingSession, DeviceMessage
from terminals.opi.messages import RECEIPT_TARGETS

WIDTH = 40


@dataclass
class Receipt:
    session: ChargingSession
    header: list[str] = field(default_factory=list)
    ticket: list[list[str]] = field(default_factory=list)  # one list of lines per terminal ticket
    breakdown: list[tuple[str, str]] = field(default_factory=list)
    times: list[tuple[str, str]] = field(default_factory=list)


def receipt_messages(session: ChargingSession):
    """The terminal's receipt outputs for this session, in the order they were printed."""
    return (
        DeviceMessage.objects.filter(transaction__session=session, target__in=RECEIPT_TARGETS)
        .select_related("transaction")
        .order_by("transaction_id", "seq")
    )


def _local(value, tz: ZoneInfo) -> str:
    if value is None:
        return "—"
    return timezone.localtime(value, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def build_receipt(session: ChargingSession, messages=None) -> Receipt:
    site = session.site
    tz = ZoneInfo(site.time_zone)
    cur = session.currency
    if messages is None:
        messages = receipt_messages(session)
    receipt = Receipt(session=session)
    receipt.header = [site.name, *[line for line in site.address.splitlines() if line.strip()]]
    receipt.ticket = [list(m.lines) for m in messages]
    receipt.times = [
        ("Started", _local(session.authorised_at or session.requested_at, tz)),
        ("Charging ended", _local(session.charging_ended_at, tz)),
        ("Closed", _local(session.closed_at, tz)),
    ]
    vat_rate = (session.tariff or {}).get("vat_rate_bp")
    total = session.captured_amount_minor or session.cost_total_minor
    receipt.breakdown = [
        ("Energy", f"{session.energy_wh / 1000:.3f} kWh"),
        ("Start fee", format_money(session.cost_start_minor, cur)),
        ("Energy cost", format_money(session.cost_energy_minor, cur)),
        ("Time cost", format_money(session.cost_time_minor, cur)),
        ("Idle fee", format_money(session.cost_idle_minor, cur)),
        (
            f"VAT {vat_rate / 100:g}% incl." if vat_rate is not None else "VAT incl.",
            format_money(session.cost_vat_minor, cur),
        ),
        ("Total", format_money(total, cur)),
    ]
    if session.cost_capped:
        receipt.breakdown.append(("Note", "capped at the reserved amount"))
    return receipt


def _pair(label: str, value: str, width: int = WIDTH) -> str:
    gap = max(1, width - len(label) - len(value))
    return f"{label}{' ' * gap}{value}"


def receipt_lines(receipt: Receipt) -> list[str]:
    s = receipt.session
    lines = [*(h.center(WIDTH).rstrip() for h in receipt.header), "=" * WIDTH]
    lines.append(_pair("Session", str(s.public_id)[:8]))
    lines.append(_pair("Connector", s.connector.evse_id))
    if s.card_brand or s.masked_pan:
        lines.append(_pair("Card", f"{s.card_brand} {s.masked_pan}".strip()))
    lines += [_pair(label, value) for label, value in receipt.times]
    lines.append("-" * WIDTH)
    lines += [_pair(label, value) for label, value in receipt.breakdown]
    for ticket in receipt.ticket:
        lines += ["-" * WIDTH, "Terminal ticket:"]
        lines += [str(line) for line in ticket]
    lines.append("=" * WIDTH)
    return lines


def render_text(receipt: Receipt) -> str:
    return "\n".join(receipt_lines(receipt)) + "\n"


# --------------------------------------------------------------------------- PDF

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
FONT_SIZE, LEADING, MARGIN = 9, 11, 40


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (Courier's standard encoding); unknown chars -> '?'."""
    text = text.replace("\u00a0", " ")
    raw = text.encode("cp1252", errors="replace")
    raw = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + raw + b")"


def render_pdf(lines: list[str]) -> bytes:
    """A valid one-page PDF of monospaced lines (lines past the page end are cut off)."""
    max_lines = (PAGE_HEIGHT - 2 * MARGIN) // LEADING
    shown = lines[:max_lines]
    content = [b"BT", f"/F1 {FONT_SIZE} Tf {LEADING} TL".encode()]
    content.append(f"{MARGIN} {PAGE_HEIGHT - MARGIN} Td".encode())
    for line in shown:
        content.append(_pdf_string(line) + b" Tj T*")
    content.append(b"ET")
    stream = b"\n".join(content)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
        "/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>",
        f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode()
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
