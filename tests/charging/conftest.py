"""A real emulator process and a small world (site, tariff, terminals, connectors) around it."""

import pytest

from evpay.audit import Actor
from sessions.models import Tariff
from terminals.models import Connector, Site, Terminal

TEST_TIMEOUTS = {
    "authorise": 8,
    "card_token": 8,
    "capture": 5,
    "release": 5,
    "repeat_last_message": 5,
    "ticket_reprint": 5,
    "status": 3,
    "brands": 3,
    "closing": 5,
    "reconciliation": 5,
    "mifare_uid": 8,
    "abort": 3,
}

CHARGER = Actor.charger("test-charger")


def make_world(
    info,
    *,
    authorise_minor=5000,
    price_per_kwh=40,
    start_fee=50,
    per_minute=0,
    idle_fee=0,
    grace=30,
    channel1="terminal",
):
    site, _ = Site.objects.get_or_create(name="Test site", defaults={"currency": "EUR"})
    Tariff.objects.filter(site=site).delete()
    tariff = Tariff.objects.create(
        site=site,
        name="Standard",
        price_per_kwh_minor=price_per_kwh,
        start_fee_minor=start_fee,
        price_per_minute_minor=per_minute,
        idle_fee_per_minute_minor=idle_fee,
        idle_grace_minutes=grace,
        authorise_amount_minor=authorise_minor,
    )
    profile = {
        "port0": info["port0"],
        "channel1_listener": channel1,
        "workstation_id": "EVPAY1",
        "timeouts": TEST_TIMEOUTS,
        "connect_timeout": 2,
    }
    if info.get("port1"):
        profile["port1"] = info["port1"]
    terminal = Terminal.objects.create(
        terminal_id=info["terminal_id"],
        name=f"IM30 {info['terminal_id']}",
        site=site,
        host=info["host"],
        profile=profile,
    )
    connectors = [
        Connector.objects.create(
            terminal=terminal, evse_id=f"NL*EVP*E{info['terminal_id']}*{i}", label=f"Connector {i}"
        )
        for i in (1, 2)
    ]
    return terminal, connectors, tariff


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Records tasks the services enqueue instead of sending them to the broker.

    These tests drive the services step by step; a real worker consuming the same broker
    would race them. The worker path is covered by tests/jobs with a real worker.
    """
    from sessions import tasks

    calls = []
    for name in (
        "authorise_session_task",
        "settle_session_task",
        "recover_transaction_task",
        "stop_by_card_task",
    ):
        task = getattr(tasks, name)
        monkeypatch.setattr(task, "delay", lambda *a, _n=task.name, **k: calls.append((_n, a)))
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args=(), kwargs=None, _n=task.name, **o: calls.append((_n, tuple(args))),
        )
    return calls


def run_enqueued(calls):
    """Run what was enqueued, in order, in this process (a stand-in for the worker)."""
    from celery import current_app

    while calls:
        name, args = calls.pop(0)
        current_app.tasks[name].run(*args)


def authorised_session(emulator, info, connector, card="visa_ok"):
    """Start a session on `connector` and authorise it with `card` at the emulator."""
    from sessions import services

    emulator.present_card(info["terminal_id"], card)
    session = services.start_session(connector, CHARGER, enqueue=False)
    services.authorise_session(session.pk, CHARGER)
    session.refresh_from_db()
    return session


def settling_session(emulator, info, connector, card="visa_ok", energy_wh=5000):
    """A session that charged `energy_wh` and was unplugged: priced, waiting to be settled."""
    from sessions import services
    from sessions.models import SessionState

    session = authorised_session(emulator, info, connector, card)
    assert session.state == SessionState.AUTHORISED, session.close_detail
    services.mark_charging_started(session, CHARGER)
    services.record_meter(session, energy_wh, CHARGER)
    services.mark_unplugged(session, CHARGER, enqueue=False)
    return session
