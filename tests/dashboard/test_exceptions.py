"""The exceptions queue: order, filters, resolve and retry by operators only."""

import pytest

from evpay import exceptions as exception_service
from evpay.models import AuditEvent, ExceptionRecord
from sessions.models import SessionState
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


def test_a_card_number_in_a_resolution_note_is_masked_before_it_is_stored(client_for, operator):
    # Staff paste from the acquirer portal; the note is kept on the exception and in the audit.
    record = f.make_exception(title="needs a person")
    note = "portal shows 4111 1111 1111 1111 captured"
    client_for(operator).post(url("exception_resolve", record.public_id), {"note": note})
    record.refresh_from_db()
    assert record.resolution_note == "portal shows 4111 11** **** 1111 captured"
    event = AuditEvent.objects.get(action="exception.resolved", subject_id=str(record.pk))
    assert "4111 1111 1111 1111" not in event.reason


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


# --------------------------------------------------------------------------- session actions


def _row_action(client, record, action, reason="driver left", **headers):
    return client.post(
        url("exception_session_action", record.public_id, action), {"reason": reason}, **headers
    )


def test_the_queue_offers_the_session_pages_actions_for_an_exception_about_a_session(
    client_for, operator, viewer, world
):
    from sessions.views import ACTIONS

    html = client_for(operator).get(url("exceptions")).content.decode()
    record = world["exception"]  # about the charging session
    for key in ("capture", "release"):
        target = url("exception_session_action", record.public_id, key)
        assert f'action="{target}"' in html
        assert f'hx-confirm="{ACTIONS[key].question}"' in html
    assert url("exception_session_action", record.public_id, "resolve") not in html
    assert 'name="reason" required' in html
    assert b"/session/capture/" not in client_for(viewer).get(url("exceptions")).content


def test_capture_from_the_queue_runs_the_session_service_with_the_reason(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    record, session = world["exception"], world["charging"]
    with django_capture_on_commit_callbacks(execute=True):
        response = _row_action(client_for(operator), record, "capture", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert f'id="exception-{record.public_id}"' in html and 'hx-swap-oob="true"' in html
    assert "queued; this list updates when the terminal answers." in html
    session.refresh_from_db()
    assert session.state == SessionState.SETTLING
    assert enqueued == [("settle_session_task", (session.pk,))]
    event = AuditEvent.objects.get(action="operator.capture_now")
    assert (event.reason, event.actor_label) == ("driver left", "otto-operator")


def test_a_queue_action_needs_a_reason_and_the_services_guards_apply(
    client_for, operator, world, enqueued
):
    record, session = world["exception"], world["charging"]
    client = client_for(operator)
    response = _row_action(client, record, "capture", reason=" ", follow=True)
    assert "Capture now: a reason is required." in response.content.decode()
    response = _row_action(client, record, "retry", follow=True)
    assert "Retry recovery was not possible: no transaction" in response.content.decode()
    session.refresh_from_db()
    assert session.state == SessionState.CHARGING and enqueued == []


def test_queue_actions_refuse_viewers_get_unknown_actions_and_sessionless_exceptions(
    client_for, viewer, operator, world
):
    record = world["exception"]
    assert _row_action(client_for(viewer), record, "capture").status_code == 403
    client = client_for(operator)
    target = url("exception_session_action", record.public_id, "capture")
    assert client.get(target).status_code == 405
    assert _row_action(client, record, "resolve").status_code == 404
    assert _row_action(client, f.make_exception(), "capture").status_code == 404
    world["charging"].refresh_from_db()
    assert world["charging"].state == SessionState.CHARGING


def test_a_resolved_exception_does_not_act_on_its_session(client_for, operator, world):
    record = f.make_exception(session=world["charging"], resolved=True)
    response = _row_action(client_for(operator), record, "capture", follow=True)
    assert "already resolved" in response.content.decode()
    world["charging"].refresh_from_db()
    assert world["charging"].state == SessionState.CHARGING


# --------------------------------------------------------------------------- assignee


def test_assign_to_me_and_unassign_are_audited_and_a_repeat_changes_nothing(
    client_for, operator, viewer
):
    record = f.make_exception(title="take me")
    client = client_for(operator)
    target = url("exception_assign", record.public_id)
    assert b"Assign to me" in client.get(url("exceptions")).content
    for _ in range(2):
        response = client.post(target, {"to": "me"}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
    record.refresh_from_db()
    assert record.assignee == operator
    html = response.content.decode()
    assert "Assigned to otto-operator" in html and "It is already yours." in html
    assert "Unassign" in html and "Assign to me" not in html
    assert "Assigned to otto-operator" in client_for(viewer).get(url("exceptions")).content.decode()
    client = client_for(operator)
    response = client.post(target, {"to": ""})
    assert response.status_code == 302 and response["Location"] == url("exceptions")
    record.refresh_from_db()
    assert record.assignee is None
    events = AuditEvent.objects.filter(subject_id=str(record.pk)).order_by("id")
    assert [(e.action, e.actor_label, e.data) for e in events] == [
        ("exception.assigned", "otto-operator", {"from": "", "to": "otto-operator"}),
        ("exception.unassigned", "otto-operator", {"from": "otto-operator", "to": ""}),
    ]


def test_assigning_is_for_operators_and_open_exceptions_only(client_for, viewer, operator):
    record = f.make_exception()
    target = url("exception_assign", record.public_id)
    assert client_for(viewer).post(target, {"to": "me"}).status_code == 403
    done = f.make_exception(resolved=True)
    client = client_for(operator)
    assert client.get(target).status_code == 405
    response = client.post(url("exception_assign", done.public_id), {"to": "me"}, follow=True)
    assert "already resolved" in response.content.decode()
    done.refresh_from_db()
    assert done.assignee is None


# --------------------------------------------------------------------------- auto-refresh


def test_the_results_refresh_themselves_with_the_current_filters_unless_a_form_is_in_use(
    client_for, viewer
):
    f.make_exception(title="first")
    response = client_for(viewer).get(
        url("exceptions"), {"status": "all", "page": "1"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert "<html" not in html
    poller = html.split("<table>")[0]
    assert 'hx-get="/exceptions/?status=all&amp;page=1"' in poller
    assert 'hx-swap="outerHTML"' in poller
    # No hx-trigger filter (htmx would eval it; the CSP has no 'unsafe-eval'): evpay.js reads
    # the conditions from data attributes, their selectors not HTML-escaped into nonsense.
    assert 'hx-trigger="every 15s" data-poll-visible' in poller
    assert "&#x27;" not in poller and "[document" not in poller
    for paused_by in (
        "form:focus-within",
        "details[open]",
        "input[placeholder]:not(:placeholder-shown)",
    ):
        assert paused_by in poller


def test_the_queue_with_session_actions_keeps_a_pinned_query_count(
    client_for, operator, django_assert_max_num_queries
):
    site = f.make_site()
    terminal = f.make_terminal(site)
    for i in range(60):
        session = f.make_session(
            f.make_connector(terminal), state="charging", close_reason="", closed_at=None
        )
        f.make_exception(session=session, assignee=operator if i % 2 else None)
    client = client_for(operator)
    with django_assert_max_num_queries(8):
        response = client.get(url("exceptions"))
    html = response.content.decode()
    assert html.count('data-action="capture"') == 50 and "Assigned to otto-operator" in html
