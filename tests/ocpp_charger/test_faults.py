"""Every fault of the emulated OCPP charger, observed from the server side, both versions.

The server is a stand-in central system built from the ``ocpp`` package's central-system
classes on a real websockets server (tests/ocpp_charger/central.py), not evpay's own central
system (built elsewhere). Timings are short and the random plan is seeded.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from evpay.testbed import ocpp_charger as oc
from tests.ocpp_charger.central import (
    StandInCentral,
    central_tx_id,
    meter_start,
    meter_stop,
    meters,
    remote_start_payload,
    remote_stop_payload,
    starts,
    stops,
    transaction_messages,
    tx_of,
)
from tests.ocpp_charger.harness import PASSWORD, VERSIONS, booted, charger_on, run


async def start_charging(central, charger, version, tag="SESSION-1", connector=1):
    charger.plug_in(connector)
    answer = await central.call("CP1", remote_start_payload(version, tag, connector))
    assert answer.status == "Accepted"
    await charger.wait_for("start_confirmed", connector, after=0)


def on_connection(central, number):
    return [r for r in central.received if r.connection == number]


async def settle(charger, timeout=5.0):
    assert await charger.flush(timeout), f"still queued: {charger.queued()}"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_dropped_socket_reconnects_and_replays_what_was_written_offline(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            tx = central_tx_id(central, version)
            online = len(meters(central, version))
            mark = charger.cursor()
            await charger.drop_connection(reconnect_after=0.4)
            await charger.wait_for("disconnected", after=mark)
            await asyncio.sleep(0.2)
            assert charger.queued() >= 2  # meter values piling up while offline
            charger.stop_local(1)
            await charger.wait_for("connected", after=mark, timeout=5)
            await charger.wait_for("stop_confirmed", 1, after=mark)
            await settle(charger)

            assert charger.fault_counts == Counter({oc.WS_DROP: 1})
            assert central.connection_count["CP1"] == 2
            assert len(central.of("BootNotification")) == 1  # a reconnect is not a reboot
            replayed = [
                r.payload
                for r in on_connection(central, 2)
                if r.action in ("MeterValues", "StopTransaction", "TransactionEvent")
            ]
            assert len(replayed) >= 3 and len(meters(central, version)) > online
            assert {tx_of(p, version) for p in replayed} == {tx}
            stop = stops(central, version)[0]
            assert meter_stop(stop, version) >= max(
                int(float(p["meter_value"][0]["sampled_value"][0]["value"]))
                for p in meters(central, version)
            )
            if version == "2.0.1":
                assert all(p["offline"] is True for p in replayed)
                seq = [p["seq_no"] for _, p in transaction_messages(central, version)]
                assert seq == list(range(len(seq)))

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_transaction_started_and_stopped_offline_is_replayed_with_the_right_ids(version):
    async def scenario():
        async with booted(version, connection_timeout=5) as (central, charger):
            # Accepted before the cable is in; the cable goes in while the socket is down.
            answer = await central.call("CP1", remote_start_payload(version, "OFFLINE-TAG", 1))
            assert answer.status == "Accepted"
            mark = charger.cursor()
            await charger.drop_connection(reconnect_after=0.5)
            await charger.wait_for("disconnected", after=mark)
            charger.plug_in(1)
            await asyncio.sleep(0.2)
            charger.stop_local(1)
            assert starts(central, version) == []
            await charger.wait_for("stop_confirmed", 1, after=mark, timeout=5)

            started = starts(central, version)[0]
            tx = central_tx_id(central, version)
            assert [kind for kind, _ in transaction_messages(central, version)][0] == "start"
            followers = [p for kind, p in transaction_messages(central, version) if kind != "start"]
            assert len(followers) >= 2 and {tx_of(p, version) for p in followers} == {tx}
            if version == "1.6":
                # The charger only learnt the transactionId from the StartTransaction answer.
                assert stops(central, version)[0]["transaction_id"] == tx
            else:
                assert (
                    started["offline"] is True and started["id_token"]["id_token"] == "OFFLINE-TAG"
                )

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_drop_can_send_the_charger_to_another_server_process(version):
    async def scenario():
        async with (
            StandInCentral({"CP1": PASSWORD}, name="a") as a,
            StandInCentral({"CP1": PASSWORD}, name="b", first_transaction_id=5001) as b,
            charger_on(a, version) as charger,
        ):
            await charger.wait_for("booted", after=0)
            await start_charging(a, charger, version)
            tx = central_tx_id(a, version)
            mark = charger.cursor()
            await charger.drop_connection(reconnect_after=0.3, url=b.url)
            await charger.wait_for("connected", after=mark, timeout=5)
            assert charger.endpoint == f"{b.url}/CP1"
            await b.wait_connected("CP1")
            await b.wait_for("MeterValues" if version == "1.6" else "TransactionEvent")
            # The other process can stop it: the charger knows the transaction by the same id.
            answer = await b.call("CP1", remote_stop_payload(version, tx))
            assert answer.status == "Accepted"
            await charger.wait_for("stop_confirmed", 1, after=mark)
            assert tx_of(stops(b, version)[0], version) == tx
            assert stops(a, version) == []

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_replay_duplicate_sends_one_queued_message_twice(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            charger.arm(oc.REPLAY_DUPLICATE)
            mark = charger.cursor()
            await charger.drop_connection(reconnect_after=0.3)
            await charger.wait_for(
                "fault", after=mark, predicate=lambda e: e.data["fault"] == oc.REPLAY_DUPLICATE
            )
            await settle(charger)
            payloads = [p for _, p in transaction_messages(central, version)]
            twice = [p for p in payloads if payloads.count(p) == 2]
            assert len(twice) == 2, "exactly one message arrived twice, identical"
            assert all(payloads.count(p) <= 2 for p in payloads)
            assert charger.fault_counts[oc.REPLAY_DUPLICATE] == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_replay_out_of_order_delivers_the_stop_before_earlier_meter_values(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            charger.arm(oc.REPLAY_OUT_OF_ORDER)
            mark = charger.cursor()
            await charger.drop_connection(reconnect_after=0.4)
            await asyncio.sleep(0.2)
            charger.stop_local(1)
            await charger.wait_for("stop_confirmed", 1, after=mark, timeout=5)
            await settle(charger)
            assert charger.fault_counts[oc.REPLAY_OUT_OF_ORDER] == 1
            order = [kind for kind, _ in transaction_messages(central, version)]
            assert order[-1] == "meter" and "stop" in order
            after_stop = [
                p for kind, p in transaction_messages(central, version)[order.index("stop") :]
            ]
            stamps = [p.get("timestamp") or p["meter_value"][0]["timestamp"] for p in after_stop]
            assert stamps == sorted(stamps, reverse=True)  # newest first: the queue reversed
            if version == "2.0.1":
                seq = [p["seq_no"] for p in after_stop]
                assert seq == sorted(seq, reverse=True) and len(seq) >= 3

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_remote_start_no_answer_lets_the_central_system_time_out(version):
    async def scenario():
        async with booted(version) as (central, charger):
            charger.plug_in(1)
            charger.arm(oc.REMOTE_START_NO_ANSWER)
            with pytest.raises(asyncio.TimeoutError):
                await central.call("CP1", remote_start_payload(version, "T", 1), timeout=0.4)
            await asyncio.sleep(0.2)
            assert starts(central, version) == [] and charger.transaction(1) is None
            assert charger.fault_counts[oc.REMOTE_START_NO_ANSWER] == 1
            # Only that one request was swallowed: the next start works.
            answer = await central.call("CP1", remote_start_payload(version, "T2", 1), timeout=2)
            assert answer.status == "Accepted"

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_remote_start_reject_refuses_a_start_the_charger_could_do(version):
    async def scenario():
        async with booted(version) as (central, charger):
            charger.plug_in(1)
            charger.arm(oc.REMOTE_START_REJECT)
            answer = await central.call("CP1", remote_start_payload(version, "T", 1))
            assert answer.status == "Rejected"
            await asyncio.sleep(0.2)
            assert starts(central, version) == []
            assert charger.fault_counts[oc.REMOTE_START_REJECT] == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_remote_start_no_transaction_accepts_and_never_starts(version):
    async def scenario():
        async with booted(version) as (central, charger):
            charger.plug_in(1)
            charger.arm(oc.REMOTE_START_NO_TRANSACTION)
            answer = await central.call("CP1", remote_start_payload(version, "T", 1))
            assert answer.status == "Accepted"
            await asyncio.sleep(0.3)
            assert starts(central, version) == [] and charger.transaction(1) is None
            assert charger.fault_counts[oc.REMOTE_START_NO_TRANSACTION] == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reboot_that_keeps_the_transaction_boots_again_and_carries_on(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            tx = central_tx_id(central, version)
            mark = charger.cursor()
            await charger.reboot(keep_transaction=True, delay=0.2)
            await charger.wait_for("booted", after=mark, timeout=5)
            await central.wait_for(
                "MeterValues" if version == "1.6" else "TransactionEvent",
                lambda p: tx_of(p, version) == tx,
                count=len(meters(central, version)) + 2,
            )
            assert len(central.of("BootNotification")) == 2
            assert any(r.action != "BootNotification" for r in on_connection(central, 2))
            answer = await central.call("CP1", remote_stop_payload(version, tx))
            assert answer.status == "Accepted"
            await charger.wait_for("stop_confirmed", 1, after=mark)
            assert tx_of(stops(central, version)[0], version) == tx
            assert charger.fault_counts == Counter({oc.REBOOT_KEEP_TRANSACTION: 1})

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reboot_that_loses_the_transaction_never_stops_it(version):
    async def scenario():
        async with booted(version) as (central, charger):
            # Armed: applied at the first meter tick of the next transaction.
            charger.arm(oc.REBOOT_LOSE_TRANSACTION, delay=0.2)
            await start_charging(central, charger, version)
            tx = central_tx_id(central, version)
            await central.wait_for("BootNotification", count=2, timeout=5)
            await asyncio.sleep(0.3)
            await settle(charger)
            assert charger.transaction(1) is None
            assert stops(central, version) == []
            later = [r.payload for r in on_connection(central, 2)]
            assert all(tx_of(p, version) != tx for p in later if "meter_value" in p)
            status = [
                r.payload for r in on_connection(central, 2) if r.action == "StatusNotification"
            ]
            connector_1 = [
                p.get("status", p.get("connector_status"))
                for p in status
                if p.get("connector_id") == 1 and p.get("evse_id", 1) == 1
            ]
            assert connector_1 == ["Preparing" if version == "1.6" else "Occupied"]
            assert charger.fault_counts == Counter({oc.REBOOT_LOSE_TRANSACTION: 1})
            # The cable is still in: the central system can start a new transaction.
            answer = await central.call("CP1", remote_start_payload(version, "AFTER", 1))
            assert answer.status == "Accepted"

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_meter_after_stop_sends_a_reading_of_the_finished_transaction(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            tx = central_tx_id(central, version)
            charger.arm(oc.METER_AFTER_STOP)
            await central.call("CP1", remote_stop_payload(version, tx))
            await charger.wait_for("stop_confirmed", 1, after=0)
            await settle(charger)
            order = transaction_messages(central, version)
            assert order[-1][0] == "meter" and order[-2][0] == "stop"
            assert tx_of(order[-1][1], version) == tx
            assert charger.fault_counts[oc.METER_AFTER_STOP] == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_meter_stop_below_start_reports_a_final_register_under_the_first(version):
    async def scenario():
        async with booted(version) as (central, charger):
            await start_charging(central, charger, version)
            charger.arm(oc.METER_STOP_BELOW_START)
            charger.stop_local(1)
            await charger.wait_for("stop_confirmed", 1, after=0)
            start = meter_start(starts(central, version)[0], version)
            assert meter_stop(stops(central, version)[0], version) < start
            assert charger.fault_counts[oc.METER_STOP_BELOW_START] == 1

    run(scenario())


@pytest.mark.parametrize("version", VERSIONS)
def test_stop_unknown_transaction_sends_a_stop_for_a_transaction_never_started(version):
    async def scenario():
        async with booted(version) as (central, charger):
            charger.send_unknown_stop(2)
            await central.wait_for("StopTransaction" if version == "1.6" else "TransactionEvent")
            assert starts(central, version) == []
            stop = stops(central, version)[0]
            assert tx_of(stop, version) is not None
            assert charger.fault_counts[oc.STOP_UNKNOWN_TRANSACTION] == 1

    run(scenario())


def test_a_fault_plan_is_seeded_and_respects_its_rate_and_fault_list():
    points = list(oc.FAULT_POINTS) * 50
    plan_a, plan_b = oc.FaultPlan(7, 0.3), oc.FaultPlan(7, 0.3)
    assert [plan_a.draw(p) for p in points] == [plan_b.draw(p) for p in points]
    other = oc.FaultPlan(8, 0.3)
    assert [oc.FaultPlan(7, 0.3).draw(p) for p in points] != [other.draw(p) for p in points]
    assert {oc.FaultPlan(1, 0.0).draw(p) for p in points} == {None}
    always = oc.FaultPlan(1, 1.0, [oc.WS_DROP, oc.METER_AFTER_STOP])
    drawn = {p: always.draw(p) for p in oc.FAULT_POINTS}
    assert drawn == {
        "remote_start": None,
        "charging": oc.WS_DROP,
        "stop": oc.METER_AFTER_STOP,
        "replay": None,
    }
    rate = oc.FaultPlan(3, 0.2)
    hits = sum(rate.draw("stop") is not None for _ in range(2000))
    assert 300 < hits < 500  # about 20 %


@pytest.mark.parametrize("version", VERSIONS)
def test_a_seeded_random_plan_plays_the_same_faults_every_run(version):
    """Sessions on one charger with a 60 % plan over the faults of a running session (drops to
    either server, a reboot, the replay and stop faults): the same faults twice, and each one
    counted once per fault event."""

    async def sessions(seed):
        faults = [
            oc.WS_DROP,
            oc.REBOOT_KEEP_TRANSACTION,
            oc.REPLAY_DUPLICATE,
            oc.REPLAY_OUT_OF_ORDER,
            oc.METER_AFTER_STOP,
            oc.METER_STOP_BELOW_START,
        ]
        plan = oc.FaultPlan(seed, 0.6, faults)
        async with (
            StandInCentral({"CP1": PASSWORD}) as a,
            StandInCentral({"CP1": PASSWORD}, first_transaction_id=5001) as b,
            charger_on(a, version, fault_plan=plan, alternate_urls=[b.url]) as charger,
        ):
            await charger.wait_for("booted", after=0)
            outcomes = []
            for n in range(8):
                connector = 1 + n % 2
                await charger.wait_online()
                central = a if charger.url == a.url else b
                charger.plug_in(connector)
                try:
                    answer = await central.call(
                        "CP1",
                        remote_start_payload(charger.version, f"S{n}", connector),
                        timeout=0.5,
                    )
                    status = answer.status
                except TimeoutError:
                    status = "no answer"
                if status == "Accepted" and charger.transaction(connector):
                    await asyncio.sleep(0.4)  # long enough for a drop or reboot and the replay
                    charger.stop_local(connector)
                    await charger.wait_online()
                    await settle(charger)
                charger.unplug(connector)
                outcomes.append(status)
            await settle(charger)
            stopped = {
                tx_of(p, version): meter_stop(p, version)
                for central in (a, b)
                for p in stops(central, version)
            }
            started = {
                central_tx_id(central, version, i): meter_start(p, version)
                for central in (a, b)
                for i, p in enumerate(starts(central, version))
            }
            below = sum(stopped[tx] < started[tx] for tx in stopped)
            return (
                outcomes,
                dict(charger.fault_counts),
                sum(e.kind == "fault" for e in charger.events),
                below,
                len(stopped),
                sorted(name for name, c in (("a", a), ("b", b)) if c.connection_count["CP1"]),
            )

    first = run(sessions(21), timeout=60)
    second = run(sessions(21), timeout=60)
    assert first == second
    outcomes, counts, fault_events, below_start, stopped, servers = first
    assert outcomes == ["Accepted"] * 8 and stopped == 8
    assert servers == ["a", "b"]  # some drops went to the other server
    assert sum(counts.values()) == fault_events >= 6
    assert len(counts) >= 4  # several kinds, not one fault over and over
    assert below_start == counts.get(oc.METER_STOP_BELOW_START, 0)
