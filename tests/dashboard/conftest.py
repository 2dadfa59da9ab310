from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from sessions.models import Operation
from tests.dashboard import factories as f


@pytest.fixture
def world(db):
    """One site, a terminal with two connectors, a closed captured session with its transactions
    and receipt, an open charging session, an exception and a closing."""
    site = f.make_site("Depot Utrecht")
    f.make_tariff(site)
    terminal = f.make_terminal(site)
    c1, c2 = f.make_connector(terminal), f.make_connector(terminal)
    closed = f.make_session(c1)
    auth = f.make_tx(closed, Operation.AUTHORISE)
    capture = f.make_tx(
        closed, Operation.CAPTURE, amount_minor=450, original=auth, limit_minor=5000
    )
    f.make_receipt(capture)
    f.make_audit(closed, "session.started", to_state="authorising")
    f.make_audit(closed, "session.closed", from_state="settling", to_state="closed")
    charging = f.make_session(
        c2,
        state="charging",
        close_reason="",
        closed_at=None,
        captured_amount_minor=0,
        card_token="open-tok",
    )
    exception = f.make_exception(session=charging)
    closing = f.make_closing(
        terminal,
        state="mismatch",
        totals=[
            {
                "brand": "VISA",
                "terminal_count": 2,
                "terminal_amount_minor": 900,
                "our_count": 1,
                "our_amount_minor": 450,
                "transaction_ids": [capture.pk],
            },
            {
                "brand": "ECMC",
                "terminal_count": 1,
                "terminal_amount_minor": 300,
                "our_count": 1,
                "our_amount_minor": 300,
            },
        ],
    )
    job = f.make_job_run()
    return {
        "site": site,
        "terminal": terminal,
        "connectors": [c1, c2],
        "closed": closed,
        "charging": charging,
        "auth": auth,
        "capture": capture,
        "exception": exception,
        "closing": closing,
        "job": job,
    }


@pytest.fixture
def paid(db):
    """A settled session at a site with its legal details, its capture and both tickets."""
    site = f.make_site("Depot Utrecht", address="Laan 1\n3511 AA Utrecht")
    site.legal_name = "Laadpaal Exploitatie B.V."
    site.legal_address = "Herengracht 100\n1015 BS Amsterdam"
    site.vat_number = "NL123456789B01"
    site.save()
    connector = f.make_connector(f.make_terminal(site), evse_id="NL*EVP*E1234")
    session = f.make_session(
        connector,
        requested_at=datetime(2026, 3, 1, 22, 30, tzinfo=ZoneInfo("UTC")),
        authorised_at=datetime(2026, 3, 1, 22, 30, tzinfo=ZoneInfo("UTC")),
        charging_started_at=datetime(2026, 3, 1, 22, 31, tzinfo=ZoneInfo("UTC")),
        charging_ended_at=datetime(2026, 3, 1, 23, 31, tzinfo=ZoneInfo("UTC")),
        closed_at=datetime(2026, 3, 1, 23, 40, tzinfo=ZoneInfo("UTC")),
        pan_last4="4242",
        masked_pan="4111 **** **** 4242",
    )
    auth = f.make_tx(session, Operation.AUTHORISE)
    f.make_receipt(auth, lines=("PRE-AUTH", "EUR 50,00"), target="PrinterReceipt")
    capture = f.make_tx(session, Operation.CAPTURE, amount_minor=450, original=auth)
    f.make_receipt(capture, lines=("MERCHANT COPY",), seq=1)
    f.make_receipt(capture, lines=("CARDHOLDER COPY", "EUR 4,50"), seq=2, target="PrinterReceipt")
    return session


@pytest.fixture
def enqueued(monkeypatch):
    """Replaces .delay of the tasks the dashboard enqueues; records (task name, args)."""
    from sessions import tasks as session_tasks
    from terminals import tasks as terminal_tasks

    calls = []
    names = [
        (terminal_tasks, n)
        for n in (
            "poll_terminal_status_task",
            "refresh_brands_task",
            "run_closing_task",
            "reprint_ticket_task",
            "read_mifare_task",
        )
    ]
    names += [
        (session_tasks, n)
        for n in ("settle_session_task", "recover_transaction_task", "authorise_session_task")
    ]
    for module, name in names:
        task = getattr(module, name)
        monkeypatch.setattr(task, "delay", lambda *a, _n=name, **k: calls.append((_n, a)))
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args=(), kwargs=None, _n=name, **o: calls.append((_n, tuple(args))),
        )
    return calls


def url(name, *args):
    return reverse(name, args=args)
