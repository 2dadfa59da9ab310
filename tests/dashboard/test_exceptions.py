"""The exceptions queue: order, filters, resolve and retry by operators only."""

import pytest

from evpay import exceptions as exception_service
from evpay.models import AuditEvent, ExceptionRecord
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db
S = ExceptionRecord.Severity


def test_the_queue_shows_unresolved_first_then_most_severe(client_for, viewer):
    info = f.make_exception(severity=S.INFO, title="info one")
    critical = f.make_exception(severity=S.CRITICAL, title="critical one")
    done = f.make_exception(severity=S.CRITICAL, title="resolved one", resolved=True)
    client = client_for(viewer)
    html = client.get(url("exceptions")).content.decode()
    assert html.index("critical one") < html.index("info one") and "resolved one" not in html
    html = client.get(url("exceptions"), {"status": "all"}).content.decode()
    assert html.index("critical one") < html.index("info one") < html.index("resolved one")
    html = client.get(url("exceptions"), {"status": "resolved"}).content.decode()
    assert "resolved one" in html and "info one" not in html
    assert info and critical and done


def test_the_queue_filters_by_kind_and_severity(client_for, viewer):
    f.make_exception(kind=ExceptionRecord.Kind.AUTH_EXPIRY, title="expiring")
    f.make_exception(
        kind=ExceptionRecord.Kind.TERMINAL_OFFLINE, severity=S.CRITICAL, title="offline"
    )
    client = client_for(viewer)
    html = client.get(url("exceptions"), {"kind": "auth_expiry"}).content.decode()
    assert "expiring" in html and "offline</strong>" not in html
    html = client.get(url("exceptions"), {"severity": "30"}).content.decode()
    assert "offline</strong>" in html and "expiring" not in html


def test_viewers_see_no_actions_and_cannot_resolve(client_for, viewer):
    record = f.make_exception()
    client = client_for(viewer)
    assert b"Resolution note" not in client.get(url("exceptions")).content
    response = client.post(url("exception_resolve", record.public_id), {"note": "x"})
    assert response.status_code == 403
    record.refresh_from_db()
    assert record.is_open


def test_operators_resolve_with_a_note_and_a_repeat_is_safe(client_for, operator):
    record = f.make_exception(title="needs a person")
    client = client_for(operator)
    response = client.post(url("exception_resolve", record.public_id), {"note": "called the site"})
    assert response.status_code == 302 and response["Location"] == url("exceptions")
    record.refresh_from_db()
    assert not record.is_open and record.resolution_note == "called the site"
    assert record.resolved_by == operator
    again = client.post(url("exception_resolve", record.public_id), {"note": "again"}, follow=True)
    assert "already resolved" in again.content.decode()
    record.refresh_from_db()
    assert record.resolution_note == "called the site"
    assert (
        AuditEvent.objects.filter(action="exception.resolved", subject_id=str(record.pk)).count()
        == 1
    )


def test_resolving_needs_a_note(client_for, operator):
    record = f.make_exception()
    response = client_for(operator).post(
        url("exception_resolve", record.public_id), {"note": " "}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert b"A note is required" in response.content
    record.refresh_from_db()
    assert record.is_open


def test_htmx_resolve_returns_the_row_and_the_message_out_of_band(client_for, operator):
    record = f.make_exception(title="row swap")
    response = client_for(operator).post(
        url("exception_resolve", record.public_id), {"note": "ok"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert f'id="exception-{record.public_id}"' in html and "Resolved" in html
    assert 'id="messages" aria-live="polite" hx-swap-oob="true"' in html
    assert "Resolved: row swap" in html


def test_retry_enqueues_recovery_of_the_transaction(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    tx = world["capture"]
    record = f.make_exception(subject=tx, kind=ExceptionRecord.Kind.UNKNOWN_OUTCOME)
    client = client_for(operator)
    assert b"Retry recovery" in client.get(url("exceptions")).content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("exception_retry", record.public_id))
    assert response.status_code == 302
    assert enqueued == [("recover_transaction_task", (tx.pk,))]
    assert AuditEvent.objects.filter(action="exception.retry").count() == 1


def test_retry_is_refused_for_viewers_and_get(client_for, viewer, operator, world, enqueued):
    record = f.make_exception(subject=world["capture"])
    assert client_for(viewer).post(url("exception_retry", record.public_id)).status_code == 403
    assert client_for(operator).get(url("exception_retry", record.public_id)).status_code == 405
    assert enqueued == []


def test_retry_of_a_resolved_exception_does_nothing(client_for, operator, world, monkeypatch):
    record = f.make_exception(subject=world["capture"], resolved=True)
    called = []
    monkeypatch.setattr(exception_service, "retry_exception", lambda *a: called.append(a))
    response = client_for(operator).post(url("exception_retry", record.public_id), follow=True)
    assert "already resolved" in response.content.decode() and called == []


def test_the_queue_paginates_with_a_pinned_query_count(
    client_for, viewer, django_assert_max_num_queries
):
    ExceptionRecord.objects.bulk_create(
        ExceptionRecord(
            kind="other",
            severity=S.WARNING,
            title=f"bulk {i}",
            dedupe_key=f"b{i}",
            what_happened="x",
        )
        for i in range(500)
    )
    client = client_for(viewer)
    with django_assert_max_num_queries(7):
        response = client.get(url("exceptions"), {"page": 3})
    assert "Page 3 of 10" in response.content.decode()
