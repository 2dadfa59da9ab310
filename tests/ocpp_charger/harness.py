"""Runs an emulated charger against the stand-in central system (see central.py) for one test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from evpay.testbed.ocpp_charger import EmulatedCharger
from tests.ocpp_charger.central import StandInCentral

PASSWORD = "s3cret-profile-1"
VERSIONS = ["1.6", "2.0.1"]

# Fast and deterministic: 50 ms meter ticks worth 550 Wh each at 11 kW (time_scale 3600).
FAST = {
    "meter_interval": 0.05,
    "time_scale": 3600.0,
    "reconnect_delay": 0.2,
    "response_timeout": 2.0,
    "transaction_message_retry_interval": 0.05,
    "seed": 15,
}


def run(coro, timeout: float = 30.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def charger_on(
    central: StandInCentral, version: str, charger_id: str = "CP1", **options
) -> AsyncIterator[EmulatedCharger]:
    settings = {**FAST, **options}
    password = settings.pop("password", PASSWORD)
    charger = EmulatedCharger(
        central.url, charger_id, password, version=version, connectors=2, **settings
    )
    runner = asyncio.create_task(charger.run())
    try:
        yield charger
    finally:
        await charger.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


@contextlib.asynccontextmanager
async def booted(version: str, **options) -> AsyncIterator[tuple[StandInCentral, EmulatedCharger]]:
    async with (
        StandInCentral({"CP1": PASSWORD, "CP2": PASSWORD}) as central,
        charger_on(central, version, **options) as charger,
    ):
        await charger.wait_for("booted", after=0)
        yield central, charger
