"""Money is integer minor units plus an ISO 4217 currency; decimals only at the edges."""

from decimal import ROUND_HALF_UP, Decimal

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


def round_half_up(value: Decimal) -> int:
    """The pricing rounding rule: half a minor unit rounds away from zero (0.5 -> 1)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_money(amount_minor: int | None, currency: str) -> str:
    """'€ 12.50' for templates."""
    if amount_minor is None:
        return "—"
    symbol = _SYMBOLS.get(currency.upper(), currency.upper() + " ")
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{symbol}{to_decimal_string(abs(amount_minor), currency)}".replace("€", "€\u00a0")
