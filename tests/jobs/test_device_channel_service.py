"""Arrangement (b): the terminal connects back to us on channel 1, and the long-running
device-channel service (a separate process) stores what it says in the database."""

import sys
import time
from contextlib import contextmanager

import pytest

from sessions import services
from sessions.models import DeviceMessage, Operation, SessionState
from terminals.emulator.harness import EmulatorProcess
from tests.charging.conftest import CHARGER, authorised_session, make_world
from tests.procs import Proc, free_port

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def _service_and_emulator(dialect="ccv"):
    port = free_port()
    # Heartbeats every 0.5 s, so a dropped database connection is hit within the test.
    with Proc(
        [
            sys.executable,
            "manage.py",
            "device_channel",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--heartbeat",
            "0.5",
        ],
        log_name="device_channel",
    ) as service:
        service.wait_for_log("device channel listening")
        with EmulatorProcess(
            count=1,
            channel1="pos",
            pos_host="127.0.0.1",
            pos_port=port,
            card_wait=2,
            dialect=dialect,
        ) as emu:
            yield emu


@pytest.fixture
def service_and_emulator():
    with _service_and_emulator() as emu:
        yield emu


def test_receipts_and_delivery_box_go_through_the_service(service_and_emulator):
    emu = service_and_emulator
    info = emu.terminals[0]
    terminal, connectors, _ = make_world(info, channel1="pos")
    session = authorised_session(emu, info, connectors[0])
    # DeliveryBox was answered yes by the service after checking the connector in the database.
    assert session.state == SessionState.AUTHORISED
    tx = session.transactions.get(operation=Operation.AUTHORISE)
    targets = list(DeviceMessage.objects.filter(transaction=tx).values_list("target", flat=True))
    assert "DeliveryBox" in targets and "Printer" in targets and "PrinterReceipt" in targets
    receipt = DeviceMessage.objects.filter(transaction=tx, target="PrinterReceipt").get()
    assert any(session.masked_pan[-4:] in line for line in receipt.lines)
    assert emu.state(info["terminal_id"])["reprint_pending"] is False


def test_the_service_refuses_delivery_when_the_session_is_no_longer_wanted(service_and_emulator):
    emu = service_and_emulator
    info = emu.terminals[0]
    terminal, connectors, _ = make_world(info, channel1="pos")
    session = services.start_session(connectors[0], CHARGER, enqueue=False)
    connectors[0].enabled = False  # taken out of service while the driver was tapping
    connectors[0].save(update_fields=["enabled"])
    emu.present_card(info["terminal_id"], "visa_ok")
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert session.state == SessionState.CLOSED
    assert not [r for r in emu.ledger(info["terminal_id"], kind="reservation")]


@pytest.mark.postgres
def test_the_service_survives_its_database_connection_being_dropped(service_and_emulator):
    from django.db import connection

    from evpay.models import Heartbeat

    with connection.cursor() as cursor:  # what a database restart does to every other client
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(2)  # several heartbeats hit the dropped connection
    emu = service_and_emulator
    info = emu.terminals[0]
    _, connectors, _ = make_world(info, channel1="pos")
    session = authorised_session(emu, info, connectors[0])
    assert session.state == SessionState.AUTHORISED
    assert Heartbeat.objects.filter(name="device_channel").exists()


def test_a_terminal_that_names_itself_nowhere_on_channel_1_gets_its_output_stored():
    """The minimal dialect sends DeviceRequests without TerminalID, with RequestIDs like
    `<ours>-d0`, and a display update just after its final response."""
    with _service_and_emulator("minimal") as emu:
        info = emu.terminals[0]
        terminal, connectors, _ = make_world(info, channel1="pos")
        session = authorised_session(emu, info, connectors[0])
        assert session.state == SessionState.AUTHORISED, session.close_detail  # DeliveryBox: yes
        tx = session.transactions.get(operation=Operation.AUTHORISE)
        targets = set(DeviceMessage.objects.filter(transaction=tx).values_list("target", flat=True))
        assert {"DeliveryBox", "Printer", "PrinterReceipt"} <= targets
        deadline = time.monotonic() + 5
        late = DeviceMessage.objects.none()
        while time.monotonic() < deadline:
            late = DeviceMessage.objects.filter(transaction=tx, target="CustomerDisplay")
            if any("THANK YOU" in " ".join(m.lines) for m in late):
                break
            time.sleep(0.1)
        assert any("THANK YOU" in " ".join(m.lines) for m in late), "late display kept"
        assert emu.state(info["terminal_id"])["reprint_pending"] is False


def test_the_service_takes_its_connection_bounds_from_the_command_line():
    """A fleet behind one address (a NAT, or the soak's emulator) needs more than the default
    8 per address; the bound still holds at whatever it is set to."""
    import socket

    port = free_port()
    argv = [sys.executable, "manage.py", "device_channel", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--max-per-address", "2"]
    with Proc(argv, log_name="device_channel_bounds") as service:
        service.wait_for_log("device channel listening")
        kept = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        time.sleep(0.3)  # both admitted before the third arrives
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert third.recv(1) == b""  # closed at once: over the per-address bound
        for sock in kept:
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # still open
                sock.recv(1)
            sock.close()
        service.wait_for_log("too many from this host; 2 open")


def test_the_service_refuses_a_bound_below_one():
    import subprocess

    from tests.procs import ROOT, process_env

    done = subprocess.run(
        [sys.executable, "manage.py", "device_channel", "--max-per-address", "0"],
        cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--max-per-address must be at least 1" in done.stderr
