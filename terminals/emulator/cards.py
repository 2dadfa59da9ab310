"""Test cards the emulated IM30 knows, and how it derives tokens from them.

Card numbers are test numbers (Luhn-valid by construction) and never leave the emulator: what the
terminal hands the POS is the masked PAN, the brand, a CCV-style token and, for Visa/Mastercard,
a PAR. Tokens are keyed one-way hashes so that they are stable per card number (the property the
back-office relies on to match the stopping card) without being reversible.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass

DEFAULT_TOKEN_KEY = "evpay-emulator-token-key"

#: A reservation above this (minor units) is declined for cards with the LOW_FUNDS behaviour.
LOW_FUNDS_LIMIT_MINOR = 5000


class Behaviour(enum.StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    LOW_FUNDS = "low_funds"
    ABORT = "abort"
    MIFARE = "mifare"


#: CardCircuit codes and the DisplayName a terminal shows for them (GetCardCircuits).
BRANDS: dict[str, str] = {
    "VISA": "Visa",
    "ECMC": "Mastercard",
    "MAES": "Maestro",
    "AMEX": "American Express",
}

# EMVCo PARs start with a 4-character BIN-controller id; these stand in for Visa and Mastercard.
_PAR_PREFIX = {"VISA": "V001", "ECMC": "M001"}


def luhn_check_digit(partial: str) -> str:
    """Return the check digit that makes ``partial + digit`` pass the Luhn test."""
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:  # these positions are doubled once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def _pan(partial: str) -> str:
    return partial + luhn_check_digit(partial)


@dataclass(frozen=True, slots=True)
class Card:
    name: str
    behaviour: Behaviour
    brand: str = ""  # CardCircuit code; empty for Mifare cards
    pan: str = ""
    # Cards sharing an account (a plastic card and its phone-wallet variant) share a PAR.
    account: str = ""
    expiry: str = ""  # MMYY, as printed on receipts
    uid: str = ""  # Mifare UID, hex

    @property
    def is_payment_card(self) -> bool:
        return self.behaviour is not Behaviour.MIFARE

    @property
    def masked_pan(self) -> str:
        """The PAN as a CCV terminal gives it: first six and last four digits, stars between."""
        if not self.pan:
            return ""
        return self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]

    def to_dict(self, key: str = DEFAULT_TOKEN_KEY) -> dict[str, object]:
        return {
            "name": self.name,
            "behaviour": str(self.behaviour),
            "brand": self.brand or None,
            "masked_pan": self.masked_pan or None,
            "token": card_token(self.pan, key) if self.pan else None,
            "par": card_par(self, key),
            "uid": self.uid or None,
        }


CARDS: dict[str, Card] = {
    card.name: card
    for card in (
        Card("visa_ok", Behaviour.APPROVE, "VISA", _pan("476173900101011"), "visa-1", "1231"),
        # A wallet (device) PAN of the same account: different token, same PAR.
        Card("visa_wallet", Behaviour.APPROVE, "VISA", _pan("489537001200347"), "visa-1", "0629"),
        Card("mc_ok", Behaviour.APPROVE, "ECMC", _pan("541333008901043"), "mc-1", "1230"),
        Card("mc_wallet", Behaviour.APPROVE, "ECMC", _pan("520473000004001"), "mc-1", "0828"),
        Card("maestro_ok", Behaviour.APPROVE, "MAES", _pan("679999010000000001"), "maes-1", "1229"),
        Card("amex_ok", Behaviour.APPROVE, "AMEX", _pan("37424500000000"), "amex-1", "1128"),
        Card("visa_declined", Behaviour.DECLINE, "VISA", _pan("400000000000000"), "visa-2", "1230"),
        Card("mc_lowfunds", Behaviour.LOW_FUNDS, "ECMC", _pan("222300004840001"), "mc-2", "1230"),
        Card("visa_abort", Behaviour.ABORT, "VISA", _pan("401200003333000"), "visa-3", "1230"),
        Card("mifare_blue", Behaviour.MIFARE, uid="04A23BC2D95E80"),
    )
}


def card_token(pan: str, key: str = DEFAULT_TOKEN_KEY) -> str:
    """CCV-style card token: ``99`` and 16 characters of a keyed hash of the card number."""
    digest = hmac.new(key.encode(), pan.encode(), hashlib.sha256).hexdigest().upper()
    return "99" + digest[:16]


def card_par(card: Card, key: str = DEFAULT_TOKEN_KEY) -> str | None:
    """29-character Payment Account Reference, shared by all cards of one account."""
    prefix = _PAR_PREFIX.get(card.brand)
    if prefix is None or not card.account:
        return None
    digest = hmac.new(key.encode(), b"par:" + card.account.encode(), hashlib.sha256).digest()
    body = base64.b32encode(digest).decode().rstrip("=")
    return prefix + body[:25]
