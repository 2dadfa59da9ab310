"""Pricing: worked examples of the rounding rule, and properties that must always hold."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from sessions.pricing import price

TARIFF = {
    "start_fee_minor": 50,
    "price_per_kwh_minor": 39,
    "price_per_minute_minor": 2,
    "idle_fee_per_minute_minor": 10,
    "idle_grace_minutes": 15,
    "vat_rate_bp": 2100,
}
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _price(wh, charge_s, idle_s, cap=None, tariff=TARIFF, started=True):
    start = T0 if started else None
    end = T0 + timedelta(seconds=charge_s)
    return price(
        tariff,
        energy_wh=wh,
        charging_started_at=start,
        charging_ended_at=end,
        unplugged_at=end + timedelta(seconds=idle_s),
        cap_minor=cap,
    )


def test_worked_example_every_component():
    # 20.5 kWh x 0.39 = 7.995 -> 8.00 (half up); 90 min x 0.02 = 1.80;
    # idle 40 min - 15 grace = 25 x 0.10 = 2.50; start 0.50. Total 12.80.
    cost = _price(20_500, 90 * 60, 40 * 60)
    assert (cost.start_minor, cost.energy_minor, cost.time_minor, cost.idle_minor) == (
        50,
        800,
        180,
        250,
    )
    assert cost.total_minor == 1280
    # VAT part of 12.80 at 21%: 12.80 x 21/121 = 2.2214… -> 2.22
    assert cost.vat_minor == 222
    assert not cost.capped


def test_half_a_cent_rounds_up_and_less_rounds_down():
    assert (
        _price(12_500, 0, 0, tariff=TARIFF | {"price_per_kwh_minor": 1}).energy_minor == 13
    )  # 12.5
    assert _price(12_499, 0, 0, tariff=TARIFF | {"price_per_kwh_minor": 1}).energy_minor == 12


def test_partial_minutes_are_priced_by_the_second():
    assert _price(0, 30, 0).time_minor == 1  # half a minute x 2 = 1.0


def test_no_start_fee_and_no_cost_when_charging_never_started():
    cost = _price(0, 0, 0, started=False)
    assert cost.total_minor == 0 and cost.vat_minor == 0


def test_total_is_capped_at_the_authorised_amount():
    cost = _price(100_000, 0, 0, cap=2000)
    assert cost.total_minor == 2000 and cost.capped and cost.uncapped_total_minor > 2000


energies = st.integers(min_value=0, max_value=500_000)
seconds = st.integers(min_value=0, max_value=48 * 3600)
caps = st.one_of(st.none(), st.integers(min_value=1, max_value=100_000))


@given(energies, seconds, seconds, caps)
def test_cost_is_never_negative_and_never_above_the_cap(wh, charge_s, idle_s, cap):
    cost = _price(wh, charge_s, idle_s, cap)
    assert cost.total_minor >= 0 and cost.vat_minor >= 0
    assert cost.vat_minor <= cost.total_minor
    if cap is not None:
        assert cost.total_minor <= cap


@given(energies, energies, seconds, seconds, caps)
def test_cost_is_monotone_in_energy(wh1, wh2, charge_s, idle_s, cap):
    lo, hi = sorted((wh1, wh2))
    assert (
        _price(lo, charge_s, idle_s, cap).total_minor
        <= _price(hi, charge_s, idle_s, cap).total_minor
    )


@given(energies, seconds, seconds, seconds, caps)
def test_cost_is_monotone_in_charging_and_idle_time(wh, s1, s2, idle_s, cap):
    lo, hi = sorted((s1, s2))
    assert _price(wh, lo, idle_s, cap).total_minor <= _price(wh, hi, idle_s, cap).total_minor
    assert _price(wh, idle_s, lo, cap).total_minor <= _price(wh, idle_s, hi, cap).total_minor
