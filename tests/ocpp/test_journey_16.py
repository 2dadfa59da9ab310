"""OCPP 1.6J: a charger plugs in, the IM30 authorises, the charger charges, the card pays."""

import pytest

from evpay.models import ExceptionRecord
from sessions.models import CloseReason, OcppMessage, SessionState
from terminals.models import ChargePoint
from tests.ocpp.charger import meter, now_iso
from tests.ocpp.conftest import charging16, ledger_for, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
S = SessionState


def test_a_16_charger_charges_and_the_card_pays_what_the_meter_says(ocpp_server, worker, world16):
    world = world16
    with world.charger(ocpp_server).connect() as charger:
        tag, txid = charging16(world, charger)
        session = world.session()
        assert session.ocpp_id_tag == tag and tag.startswith("EVP")
        assert txid == session.pk
        assert session.state == S.CHARGING
        assert charger.call("Authorize", id_tag=tag)["id_tag_info"]["status"] == "Accepted"
        assert charger.call("Authorize", id_tag="SOMEONEELSE")["id_tag_info"]["status"] == (
            "Invalid"
        )
        charger.call("MeterValues", connector_id=1, transaction_id=txid, meter_value=meter(3000))
        session.refresh_from_db()
        assert session.energy_wh == 2000
        charger.call(
            "StopTransaction", meter_stop=6000, timestamp=now_iso(), transaction_id=txid,
            reason="Local",
        )  # fmt: skip
        session.refresh_from_db()
        assert (session.state, session.energy_wh) == (S.ENDED, 5000)
        charger.status(1, "Finishing")
        charger.status(1, "Available")
        wait_for(lambda: world.session().state == S.CLOSED, 60, "the capture")
    session.refresh_from_db()
    # 0.50 start fee + 5 kWh at 0.40 (tests.charging.conftest.make_world)
    assert session.cost_total_minor == 250
    assert (session.close_reason, session.captured_amount_minor) == (CloseReason.CAPTURED, 250)
    assert [c["amount_minor"] for c in ledger_for(world, session)] == [250]
    actions = list(
        OcppMessage.objects.filter(session=session, direction="in", kind="call").values_list(
            "action", flat=True
        )
    )
    assert {"StartTransaction", "MeterValues", "StopTransaction"} <= set(actions)
    assert OcppMessage.objects.filter(
        session=session, direction="out", action="RemoteStartTransaction"
    ).exists()
    cp = ChargePoint.objects.get(pk=world.charge_point.pk)
    assert (cp.vendor, cp.model, cp.firmware_version) == ("evpay", "Test 22", "1.2.3")
    assert world.connectors[0].__class__.objects.get(pk=world.connectors[0].pk).ocpp_status == (
        "Available"
    )
    assert not ExceptionRecord.objects.exists()


def test_a_session_started_through_the_api_on_an_ocpp_connector_is_started_on_the_charger(
    ocpp_server, worker, world16
):
    from sessions import services
    from tests.charging.conftest import CHARGER

    world = world16
    with world.charger(ocpp_server).connect() as charger:
        charger.boot()
        world.emulator.present_card(world.info["terminal_id"], "visa_ok")
        # What the JSON API's start does (a connector chosen at the terminal or by an app).
        session = services.start_session(world.connectors[1], CHARGER)
        remote = charger.wait_command("RemoteStartTransaction")
        assert remote["connectorId"] == 2
        session.refresh_from_db()
        assert (session.state, session.ocpp_id_tag) == (S.AUTHORISED, remote["idTag"])
