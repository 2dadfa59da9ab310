"""Test cards and token derivation (pure functions, no process)."""

from __future__ import annotations

from terminals.emulator.cards import (
    CARDS,
    Behaviour,
    card_par,
    card_token,
    luhn_check_digit,
    luhn_valid,
)


def test_every_payment_card_number_passes_the_luhn_check():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_check_digit("7992739871") == "3"
    for card in CARDS.values():
        if card.is_payment_card:
            assert luhn_valid(card.pan), card.name


def test_tokens_are_ccv_shaped_stable_and_keyed():
    pan = CARDS["visa_ok"].pan
    token = card_token(pan)
    assert token == card_token(pan)
    assert token.startswith("99") and len(token) == 18
    assert pan not in token
    assert card_token(pan, "another key") != token
    tokens = {card_token(card.pan) for card in CARDS.values() if card.pan}
    assert len(tokens) == len([card for card in CARDS.values() if card.pan])


def test_par_is_shared_within_an_account_and_only_for_visa_and_mastercard():
    assert card_par(CARDS["visa_ok"]) == card_par(CARDS["visa_wallet"])
    assert card_par(CARDS["mc_ok"]) == card_par(CARDS["mc_wallet"])
    assert card_par(CARDS["visa_ok"]) != card_par(CARDS["visa_declined"])
    assert len(card_par(CARDS["visa_ok"])) == 29
    assert card_par(CARDS["amex_ok"]) is None
    assert card_par(CARDS["maestro_ok"]) is None
    assert card_par(CARDS["mifare_blue"]) is None


def test_masked_pan_keeps_first_six_and_last_four():
    assert CARDS["visa_ok"].masked_pan == "476173******0119"
    assert CARDS["amex_ok"].masked_pan.count("*") == len(CARDS["amex_ok"].pan) - 10
    assert CARDS["mifare_blue"].masked_pan == ""
    assert CARDS["mifare_blue"].behaviour is Behaviour.MIFARE
