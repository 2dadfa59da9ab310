"""Money is integer minor units plus an ISO 4217 currency; decimals only at the edges."""

from decimal import ROUND_HALF_UP, Decimal

from django.utils import formats

from terminals.opi.messages import currency_exponent

_SYMBOLS = {
    "EUR": "€",
    "GBP": "£",
    "USD": "$",
    "CHF": "CHF ",
    "SEK": "SEK ",
    "NOK": "NOK ",
    "DKK": "DKK ",
    "PLN": "PLN ",
}


def exponent(currency: str) -> int:
    # The protocol library's ISO 4217 table: what we show must match what goes on the wire.
    return currency_exponent(currency)


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-exponent(currency))


def to_decimal_string(amount_minor: int, currency: str) -> str:
    """'12.50' for 1250 EUR: what the terminal protocol and CSV exports carry."""
    places = exponent(currency)
    return f"{to_decimal(amount_minor, currency):.{places}f}"


def decimal_string_formatter(currency: str):
    """to_decimal_string for one currency as a function, in integer arithmetic: a CSV of a
    day's sessions formats four amounts a row, and Decimal was most of its time (issue 19)."""
    places = exponent(currency)
    unit = 10**places

    def formatted(amount_minor: int) -> str:
        if amount_minor < 0 or places == 0:
            return to_decimal_string(amount_minor, currency)
        whole, fraction = divmod(amount_minor, unit)
        return f"{whole}.{fraction:0{places}d}"

    return formatted


def round_half_up(value: Decimal) -> int:
    """The pricing rounding rule: half a minor unit rounds away from zero (0.5 -> 1)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_money(amount_minor: int | None, currency: str, *, localize: bool = True) -> str:
    """An amount for people, in the active language's number format, always grouped:
    '€ 1,234.50' in English, '€ 1.234,50' in Dutch (a no-break space after the euro sign).

    localize=False gives the language-neutral '€ 1234.50', for texts that are stored (audit
    reasons, exception and closing texts): they are read later by staff in any language, and
    a stored "€ 1.234,50" would read as a different amount in English.
    """
    if amount_minor is None:
        return "—"
    symbol = _SYMBOLS.get(currency.upper(), currency.upper() + " ")
    sign = "-" if amount_minor < 0 else ""
    if localize:
        number = formats.number_format(
            to_decimal(abs(amount_minor), currency),
            exponent(currency),
            use_l10n=True,
            force_grouping=True,
        )
    else:
        number = to_decimal_string(abs(amount_minor), currency)
    return f"{sign}{symbol}{number}".replace("€", "€\u00a0")
