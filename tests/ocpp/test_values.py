"""What evpay reads from a charger's numbers and strings, before any of it is applied."""

import pytest
from ocpp.exceptions import PropertyConstraintViolationError

from sessions.ocpp.reports import ReportRefused, energy_register_wh
from sessions.ocpp.server import check_values


def _mv(at, *samples):
    return [{"timestamp": at, "sampledValue": list(samples)}]


def test_the_newest_total_energy_register_is_read_in_wh_from_wh_and_kwh():
    values = _mv("2026-01-01T10:00:00Z", {"value": "1.5", "unit": "kWh"}) + _mv(
        "2026-01-01T10:05:00Z",
        {"value": "2500", "measurand": "Energy.Active.Import.Register"},
        {"value": "999", "measurand": "Energy.Active.Import.Register", "phase": "L1"},
        {"value": "7", "measurand": "Power.Active.Import"},
    )
    wh, at = energy_register_wh(values, "1.6")
    assert wh == 2500 and at.minute == 5


def test_201_unit_multipliers_scale_the_reading():
    sample = {"value": 12.5, "unitOfMeasure": {"unit": "kWh", "multiplier": 0}}
    assert energy_register_wh(_mv("2026-01-01T10:00:00Z", sample), "2.0.1")[0] == 12_500
    sample = {"value": 3, "unitOfMeasure": {"unit": "Wh", "multiplier": 3}}
    assert energy_register_wh(_mv("2026-01-01T10:00:00Z", sample), "2.0.1")[0] == 3000


@pytest.mark.parametrize(
    "sample",
    [
        {"value": "NaN"},
        {"value": "-5"},
        {"value": "1e30"},
        {"value": "abc"},
        {"value": "5", "unit": "varh"},
    ],
)
def test_readings_that_are_no_energy_are_refused(sample):
    with pytest.raises(ReportRefused):
        energy_register_wh(_mv("2026-01-01T10:00:00Z", sample), "1.6")


def test_a_reading_without_a_real_date_is_refused():
    with pytest.raises(ReportRefused):
        energy_register_wh(_mv("yesterday", {"value": "5"}), "1.6")


@pytest.mark.parametrize(
    "payload",
    [
        {"idTag": "ABC\x00"},
        {"info": "line\nbreak"},
        {"nested": [{"deeper": "\x1b[31m"}]},
        {"meterStart": 10**16},
        {"value": float("inf")},
    ],
)
def test_control_characters_and_numbers_out_of_range_are_refused(payload):
    with pytest.raises(PropertyConstraintViolationError):
        check_values(payload)


def test_ordinary_payloads_pass():
    check_values({"idTag": "EVPABC", "meterStart": 123456, "ok": True, "list": [1, 2.5, None]})
