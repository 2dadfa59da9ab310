"""Pricing a charging session from its tariff snapshot. Pure functions, no database.

Rounding rule (documented for receipts and support staff): each component is computed exactly
from the tariff and then rounded to a whole minor unit, half away from zero (0.5 -> 1):

- start fee: once, when charging has started (no fee if it never did);
- energy: energy_wh x price_per_kwh / 1000;
- time: charging seconds (started -> ended) x price_per_minute / 60;
- idle: seconds plugged in after charging ended, minus the grace period, x idle_fee / 60;
- total = sum of the rounded components, capped at the authorised amount (the driver is never
  charged more than was reserved; `capped` says it happened);
- VAT part of the (VAT-inclusive) total: total x rate / (1 + rate), rounded the same way.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal

from evpay.money import round_half_up


@dataclass(frozen=True)
class Cost:
    start_minor: int
    energy_minor: int
    time_minor: int
    idle_minor: int
    total_minor: int
    vat_minor: int
    capped: bool
    uncapped_total_minor: int

    def as_dict(self) -> dict:
        return asdict(self)


def _seconds(start: datetime | None, end: datetime | None) -> int:
    if start is None or end is None or end <= start:
        return 0
    return int((end - start).total_seconds())


def price(
    tariff: dict,
    *,
    energy_wh: int,
    charging_started_at: datetime | None,
    charging_ended_at: datetime | None,
    unplugged_at: datetime | None,
    cap_minor: int | None,
) -> Cost:
    """Cost of a session so far. Pass `now` as charging_ended_at for a running session."""
    if energy_wh < 0:
        raise ValueError("energy cannot be negative")
    started = charging_started_at is not None
    start_fee = tariff["start_fee_minor"] if started else 0
    energy = round_half_up(Decimal(energy_wh) * tariff["price_per_kwh_minor"] / 1000)
    charging_seconds = _seconds(charging_started_at, charging_ended_at)
    time_fee = round_half_up(Decimal(charging_seconds) * tariff["price_per_minute_minor"] / 60)
    idle_seconds = max(
        0, _seconds(charging_ended_at, unplugged_at) - tariff["idle_grace_minutes"] * 60
    )
    idle_fee = round_half_up(Decimal(idle_seconds) * tariff["idle_fee_per_minute_minor"] / 60)
    uncapped = start_fee + energy + time_fee + idle_fee
    total = uncapped if cap_minor is None else min(uncapped, cap_minor)
    rate = Decimal(tariff["vat_rate_bp"]) / 10000
    vat = round_half_up(Decimal(total) * rate / (1 + rate)) if total else 0
    return Cost(
        start_minor=start_fee,
        energy_minor=energy,
        time_minor=time_fee,
        idle_minor=idle_fee,
        total_minor=total,
        vat_minor=vat,
        capped=total < uncapped,
        uncapped_total_minor=uncapped,
    )
