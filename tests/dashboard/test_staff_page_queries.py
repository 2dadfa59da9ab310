"""The staff pages benchmarks/staff_pages.py times keep to ten queries (issue 19, P3)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sessions.models import Operation
from terminals.models import ChargePoint, MifareRead
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy(world):
    """The world plus history that each panel of the terminal page reads."""
    terminal = world["terminal"]
    f.make_tx(world["charging"], Operation.AUTHORISE)
    for day in range(1, 6):
        f.make_closing(terminal, business_date=timezone.localdate() - timedelta(days=day))
    return world


def test_the_terminal_page_keeps_to_ten_queries(
    client_for, viewer, busy, django_assert_max_num_queries
):
    """Issue 19 asks for 10; it was 18, then 15. Three are the login's (session, user, its
    permissions in one read), one reads the terminal and one each its panels: the job runs,
    the closings with the day's among them, connectors, status history with the uptime chart,
    the last Mifare read and the brands. The recent transactions come after the page, from
    their own fragment (below)."""
    client = client_for(viewer)
    with django_assert_max_num_queries(10):
        response = client.get(url("terminals:detail", busy["terminal"].public_id))
    assert response.status_code == 200


@pytest.mark.parametrize("part", ["status", "panels", "transactions"])
def test_the_terminal_pages_fragments_keep_to_ten_queries(
    client_for, operator, busy, part, django_assert_max_num_queries
):
    """What the page asks for after it is shown: the live status, the panels it redraws, the
    recent transactions it loads (htmx)."""
    client = client_for(operator)
    with django_assert_max_num_queries(10):
        response = client.get(
            url("terminals:detail", busy["terminal"].public_id),
            {"part": part},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200 and b"<html" not in response.content


def _terminal_page_queries(client, terminal) -> list[int]:
    """Queries of the page and of each fragment it asks for."""
    path = url("terminals:detail", terminal.public_id)
    counts = []
    for params, headers in [
        ({}, {}),
        ({"part": "status"}, {"HTTP_HX_REQUEST": "true"}),
        ({"part": "panels"}, {"HTTP_HX_REQUEST": "true"}),
        ({"part": "transactions"}, {"HTTP_HX_REQUEST": "true"}),
    ]:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(path, params, **headers).status_code == 200
        counts.append(len(queries))
    return counts


def _charge_point(site, i):
    return ChargePoint.objects.create(identity=f"CP-HIST-{i}", site=site, connected=bool(i % 2))


def test_the_terminal_page_costs_the_same_queries_with_a_long_history(client_for, operator):
    """No panel reads per row: one of everything it shows, then many of each."""
    site = f.make_site()
    terminal = f.make_terminal(site)
    connector = f.make_connector(terminal)
    session = f.make_session(connector)
    f.make_tx(session, Operation.AUTHORISE)
    f.make_closing(terminal)
    f.make_job_run("closing", subject=terminal.terminal_id)
    MifareRead.objects.create(terminal=terminal, requested_by=operator)
    client = client_for(operator)
    few = _terminal_page_queries(client, terminal)

    for i in range(1, 6):
        f.make_connector(terminal, charge_point=_charge_point(site, i), ocpp_connector_id=1)
    sessions = f.bulk_sessions([connector], 60)
    for each in sessions:
        f.make_tx(each, Operation.AUTHORISE)
    for day in range(1, 30):
        f.make_closing(terminal, business_date=timezone.localdate() - timedelta(days=day))
    f.make_closing(terminal, state="pending")
    for kind in ("brands", "closing") * 8:
        f.make_job_run(kind, subject=terminal.terminal_id, outcome="failed", error="no answer")
    for _ in range(3):
        MifareRead.objects.create(terminal=terminal, requested_by=operator)
    f.flapping_status_history(terminal, 299, every=timedelta(minutes=30))
    assert _terminal_page_queries(client, terminal) == few
    transactions = client.get(
        url("terminals:detail", terminal.public_id),
        {"part": "transactions"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert transactions.count("<tr>") == 1 + 20  # the header and the latest twenty


def test_the_receipt_search_keeps_to_ten_queries(
    client_for, viewer, busy, django_assert_max_num_queries
):
    session = busy["closed"]
    client = client_for(viewer)
    with django_assert_max_num_queries(10):
        response = client.get(
            url("sessions:receipts"),
            {
                "date": timezone.localdate(session.requested_at).isoformat(),
                "amount": "4.50",
                "last4": session.pan_last4,
            },
        )
    assert str(session.public_id) in response.content.decode()


def test_the_closings_list_keeps_to_ten_queries(
    client_for, viewer, busy, django_assert_max_num_queries
):
    client = client_for(viewer)
    with django_assert_max_num_queries(10):
        response = client.get(url("terminals:closings"))
    assert response.status_code == 200
