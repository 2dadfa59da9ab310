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
    return f.make_paid_session()


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
