"""Template filters for money, site-local times, card brands and status badges."""

from datetime import datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils import dateformat, formats, timezone, translation

from evpay.money import format_money, to_decimal_string

register = template.Library()


@register.filter
def money(amount_minor, currency):
    """{{ s.cost_total_minor|money:s.currency }} -> '€ 12.50'."""
    if amount_minor is None or amount_minor == "":
        return "—"
    return format_money(int(amount_minor), currency or "EUR")


@register.filter
def decimal_amount(amount_minor, currency):
    """{{ amount|decimal_amount:'EUR' }} -> '12.50' (CSV-like, no symbol)."""
    if amount_minor is None or amount_minor == "":
        return ""
    return to_decimal_string(int(amount_minor), currency or "EUR")


def site_zone(site_or_tz):
    if site_or_tz is None or site_or_tz == "":
        return timezone.get_current_timezone()
    name = getattr(site_or_tz, "time_zone", site_or_tz)
    try:
        return ZoneInfo(str(name))
    except (KeyError, ValueError):
        return timezone.get_current_timezone()


def site_localtime(value: datetime, site_or_tz=None) -> datetime:
    return timezone.localtime(value, site_zone(site_or_tz))


#: A moment / a day as staff read it, per language (Django date formats); ISO order otherwise.
SITETIME_FORMATS = {"nl": "d-m-Y H:i:s"}
SITETIME_DEFAULT = "Y-m-d H:i:s"
DAY_FORMATS = {"nl": "d-m-Y"}
DAY_DEFAULT = "Y-m-d"


def _language() -> str:
    return (translation.get_language() or "").split("-")[0]


@register.filter
def day(value):
    """{{ closing.business_date|day }}: 'YYYY-MM-DD' (Dutch: 'DD-MM-YYYY'). Machine-read
    values (data-*, datetime=, URLs) keep |date:"Y-m-d"."""
    if not value:
        return "—"
    return dateformat.format(value, DAY_FORMATS.get(_language(), DAY_DEFAULT))


@register.filter
def sitetime(value, site_or_tz=None):
    """{{ dt|sitetime:session.site }}: 'YYYY-MM-DD HH:MM:SS' in the site's time zone (Dutch:
    'DD-MM-YYYY HH:MM:SS')."""
    if not value:
        return "—"
    fmt = SITETIME_FORMATS.get(_language(), SITETIME_DEFAULT)
    return dateformat.format(site_localtime(value, site_or_tz), fmt)


#: CardCircuit codes as terminals send them, and the names people know them by. A terminal also
#: reports a DisplayName per brand (TerminalBrand.display_name); these cover codes seen on
#: sessions before any terminal reported them, and keep the names the same everywhere.
BRAND_NAMES: dict[str, str] = {
    "VISA": "Visa",
    "ECMC": "Mastercard",
    "MAES": "Maestro",
    "AMEX": "American Express",
    "VPAY": "V Pay",
    "BCMC": "Bancontact",
    "DINE": "Diners Club",
    "DISC": "Discover",
    "JCB": "JCB",
    "CUP": "UnionPay",
}


@register.filter
def brand_name(code):
    """{{ s.card_brand|brand_name }}: 'ECMC' -> 'Mastercard'; an unknown code as it is."""
    if not code:
        return ""
    return BRAND_NAMES.get(str(code).strip().upper(), str(code))


STATUS_CLASSES = {
    "IDLE": "ok",
    "READY": "ok",
    "BUSY": "warn",
    "REPRINT_TICKET": "warn",
    "LOGGED_OUT": "warn",
    "LOCKED": "bad",
    "INOPERABLE": "bad",
    "UNKNOWN": "",
    "REACHABLE": "warn",
    "OFFLINE": "bad",
    # sessions, transactions, closings, job runs, exceptions
    "closed": "",
    "charging": "ok",
    "settling": "warn",
    "authorising": "warn",
    "success": "ok",
    "declined": "bad",
    "unknown": "bad",
    "failed": "bad",
    "busy": "warn",
    "not_completed": "warn",
    "aborted": "warn",
    "pending": "warn",
    "matched": "ok",
    "mismatch": "bad",
    "unverified": "warn",
    "ok": "ok",
    "partial": "warn",
    "running": "warn",
    "retrying": "warn",
    "done": "ok",
    "30": "bad",
    "20": "warn",
    "10": "",
}


@register.filter
def badge_class(value):
    return STATUS_CLASSES.get(str(value), "")


@register.filter
def wh_to_kwh(value):
    if value in (None, ""):
        return "—"
    return formats.number_format(int(value) / 1000, 3, use_l10n=True)


@register.filter
def bp_percent(value):
    """VAT basis points -> '21%' / '9.5%'."""
    if value in (None, ""):
        return "—"
    pct = f"{int(value) / 100:g}"
    return pct.replace(".", formats.get_format("DECIMAL_SEPARATOR")) + "%"
