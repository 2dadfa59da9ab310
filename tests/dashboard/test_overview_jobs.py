"""Overview counters and the job runs list."""

import pytest
from django.utils import timezone

from evpay.models import ExceptionRecord, JobRun
from terminals.models import TerminalStatus
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def test_overview_counts_terminals_sessions_money_and_exceptions(client_for, viewer, world):
    f.make_terminal(world["site"], status=TerminalStatus.OFFLINE)
    gbp_site = f.make_site("London", currency="GBP", time_zone="Europe/London")
    f.make_session(
        f.make_connector(f.make_terminal(gbp_site)),
        currency="GBP",
        captured_amount_minor=700,
        closed_at=timezone.now(),
    )
    f.make_exception(severity=ExceptionRecord.Severity.CRITICAL)
    world["closed"].closed_at = timezone.now()
    world["closed"].save()
    html = client_for(viewer).get(url("overview")).content.decode()
    assert 'id="terminals-online">2 online' in html
    assert 'id="terminals-offline">1 offline' in html
    assert 'id="sessions-charging">1<' in html
    assert "€\u00a04.50" in html and "£7.00" in html
    assert "Critical</span></a> 1" in html and "Warning</span></a> 1" in html
    assert url("terminals:closing_detail", world["closing"].public_id) in html


def test_overview_fragment_polls_every_10s_and_slower_when_hidden(client_for, viewer, world):
    response = client_for(viewer).get(url("overview"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="overview-live"' in html
    # While hidden, one tick in 6: every 60 s (evpay.js; no hx-trigger filter to eval).
    assert 'hx-trigger="every 10s" data-poll-visible data-poll-hidden-every="6"' in html


def test_overview_query_count(client_for, viewer, world, django_assert_max_num_queries):
    client = client_for(viewer)
    with django_assert_max_num_queries(10):
        assert client.get(url("overview"), HTTP_HX_REQUEST="true").status_code == 200


def test_job_runs_filter_by_kind_and_outcome(client_for, viewer):
    f.make_job_run("recovery_sweep", subject="sweep-subject")
    f.make_job_run(
        "closing",
        subject="closing-subject",
        outcome=JobRun.Outcome.FAILED,
        error="terminal did not answer",
    )
    client = client_for(viewer)
    html = client.get(url("job_runs"), {"kind": "closing"}).content.decode()
    assert "closing-subject" in html and "sweep-subject" not in html
    assert "terminal did not answer" in html
    html = client.get(url("job_runs"), {"outcome": "ok"}).content.decode()
    assert "sweep-subject" in html and "closing-subject" not in html


def test_job_runs_paginate_with_a_pinned_query_count(
    client_for, viewer, django_assert_max_num_queries
):
    JobRun.objects.bulk_create(JobRun(kind="status_poll", subject=f"T{i}") for i in range(1000))
    client = client_for(viewer)
    with django_assert_max_num_queries(7):
        response = client.get(url("job_runs"), {"page": 2})
    assert "Page 2 of 20" in response.content.decode()


def test_job_runs_show_retries_as_retrying_with_a_warn_badge_and_filter_on_them(client_for, viewer):
    f.make_job_run(
        "closing",
        subject="busy-subject",
        outcome=JobRun.Outcome.RETRYING,
        error="TerminalBusy: terminal T1 is serving another request",
    )
    f.make_job_run("closing", subject="failed-subject", outcome=JobRun.Outcome.FAILED, error="x")
    client = client_for(viewer)
    html = client.get(url("job_runs")).content.decode()
    assert '<option value="retrying">Retrying</option>' in html
    assert '<span class="badge warn">Retrying</span>' in html
    assert "<summary>Why</summary><pre>TerminalBusy: terminal T1" in html
    html = client.get(url("job_runs"), {"outcome": "retrying"}).content.decode()
    assert "busy-subject" in html and "failed-subject" not in html
    assert '<option value="retrying" selected>Retrying</option>' in html
