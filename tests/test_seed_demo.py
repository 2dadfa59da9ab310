"""The demo seed's OCPP part: chargers of both versions on a share of the connectors, each
still paid at its IM30; one charge point for an external charger on a terminal of its own;
passwords kept in a 0600 file (only their hash in the database); safe to run again."""

import json
import stat

import pytest
from django.core.management import call_command

from evpay.management.commands.seed_demo import RESERVED_CHARGE_POINT
from terminals.models import ChargePoint, Connector, Terminal

pytestmark = pytest.mark.django_db


def _seed(tmp_path, terminals=6):
    call_command(
        "seed_demo",
        terminals=terminals,
        keys_file=str(tmp_path / "keys.json"),
        ocpp_file=str(tmp_path / "ocpp.json"),
    )
    return json.loads((tmp_path / "ocpp.json").read_text())


def test_the_seed_registers_ocpp_chargers_of_both_versions_and_a_reserved_charge_point(tmp_path):
    known = _seed(tmp_path)
    chargers = known["chargers"]
    assert known["reserved"] == RESERVED_CHARGE_POINT
    versions = sorted(spec["version"] for spec in chargers.values() if not spec["reserved"])
    assert versions == ["1.6", "1.6", "2.0.1", "2.0.1"]
    for identity, spec in chargers.items():
        cp = ChargePoint.objects.get(identity=identity)
        assert cp.check_password(spec["password"])
        assert spec["password"] not in cp.password_hash
        assert {c.terminal.terminal_id for c in cp.connectors.all()} == {spec["terminal_id"]}
    # 2.0.1 numbers EVSEs, 1.6 connectors; the rest stays on the JSON API.
    v201 = next(i for i, s in chargers.items() if s["version"] == "2.0.1")
    assert sorted(
        Connector.objects.filter(charge_point__identity=v201).values_list(
            "ocpp_evse_id", "ocpp_connector_id"
        )
    ) == [(1, 1), (2, 1)]
    assert Connector.objects.filter(charge_point__isnull=True).count() == 4
    reserved = ChargePoint.objects.get(identity=RESERVED_CHARGE_POINT)
    terminal = Terminal.objects.get(terminal_id=chargers[RESERVED_CHARGE_POINT]["terminal_id"])
    assert terminal.terminal_id == "52000007"  # the one the emulator runs beyond the six
    assert set(terminal.connectors.values_list("charge_point", flat=True)) == {reserved.pk}
    assert stat.S_IMODE((tmp_path / "ocpp.json").stat().st_mode) == 0o600


def test_seeding_again_keeps_the_chargers_and_their_passwords(tmp_path):
    first = _seed(tmp_path)
    again = _seed(tmp_path)
    assert again == first
    assert ChargePoint.objects.count() == 5


def test_a_lost_password_file_gets_new_passwords_that_work(tmp_path):
    first = _seed(tmp_path)
    (tmp_path / "ocpp.json").unlink()
    again = _seed(tmp_path)
    for identity, spec in again["chargers"].items():
        assert spec["password"] != first["chargers"][identity]["password"]
        assert ChargePoint.objects.get(identity=identity).check_password(spec["password"])
