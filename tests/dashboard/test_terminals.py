"""Terminal list (filters, live badge cursor), detail, actions by role, Mifare read polling."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.models import AuditEvent
from terminals import services
from terminals.models import MifareRead, PeriodClosing, Terminal, TerminalStatus
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def test_terminal_list_filters_by_site_status_brand_and_search(client_for, viewer):
    a, b = f.make_site("Alpha"), f.make_site("Beta")
    ready = f.make_terminal(a, name="Front gate", brands=("VISA",))
    offline = f.make_terminal(b, name="Back lot", status=TerminalStatus.OFFLINE, brands=("MAES",))
    client = client_for(viewer)

    def names(**params):
        html = client.get(url("terminals:list"), params).content.decode()
        return {t.name for t in (ready, offline) if t.name in html}

    assert names() == {"Front gate", "Back lot"}
    assert names(site=str(a.public_id)) == {"Front gate"}
    assert names(status="OFFLINE") == {"Back lot"}
    assert names(status="online") == {"Front gate"}
    assert names(brand="maes") == {"Back lot"}
    assert names(q="front") == {"Front gate"}
    assert names(q=offline.terminal_id) == {"Back lot"}
    assert names(site="not-a-uuid") == set()


def test_the_live_poll_returns_only_rows_changed_since_the_cursor_as_out_of_band_swaps(
    client_for, viewer
):
    site = f.make_site()
    old = f.make_terminal(site, status_changed_at=timezone.now() - timedelta(hours=2))
    changed = f.make_terminal(site, status=TerminalStatus.OFFLINE, status_changed_at=timezone.now())
    since = (timezone.now() - timedelta(minutes=1)).isoformat()
    response = client_for(viewer).get(
        url("terminals:list"), {"since": since}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="terminal-{changed.public_id}" hx-swap-oob="true"' in html
    assert str(old.public_id) not in html
    assert "<html" not in html
    # The response carries the next poller with a fresh cursor.
    assert 'id="terminal-poller"' in html and "since=" in html


def test_a_bad_cursor_is_refused(client_for, viewer):
    response = client_for(viewer).get(url("terminals:list"), {"since": "yesterday"})
    assert response.status_code == 400


def test_the_list_page_polls_slower_when_the_tab_is_hidden(client_for, viewer, world):
    html = client_for(viewer).get(url("terminals:list")).content.decode()
    # While hidden, one tick in 6: every 30 s (evpay.js; no hx-trigger filter to eval).
    assert 'hx-trigger="every 5s" data-poll-visible data-poll-hidden-every="6"' in html


def test_terminal_list_paginates_and_keeps_its_query_count_with_300_terminals(
    client_for, viewer, django_assert_max_num_queries
):
    site = f.make_site()
    f.bulk_terminals(site, 300)
    client = client_for(viewer)
    with django_assert_max_num_queries(9):
        response = client.get(url("terminals:list"))
    assert response.status_code == 200
    assert "Page 1 of 6" in response.content.decode()
    with django_assert_max_num_queries(9):
        assert "Page 6 of 6" in client.get(url("terminals:list"), {"page": 6}).content.decode()
    since = (timezone.now() - timedelta(minutes=1)).isoformat()
    Terminal.objects.filter(pk__in=Terminal.objects.values("pk")[:3]).update(
        status_changed_at=timezone.now()
    )
    # The page's change times, then only the changed rows (and their brands).
    with django_assert_max_num_queries(7):
        html = client.get(url("terminals:list"), {"since": since}, HTTP_HX_REQUEST="true").content
    assert html.count(b"hx-swap-oob") == 3
    # Nothing changed since: an empty 204 that htmx does not swap, from the times alone.
    later = (timezone.now() + timedelta(seconds=1)).isoformat()
    with django_assert_max_num_queries(5):
        response = client.get(url("terminals:list"), {"since": later}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response.content == b""


def _no_closing_today(world):
    yesterday = world["closing"].business_date - timedelta(days=1)
    PeriodClosing.objects.filter(pk=world["closing"].pk).update(business_date=yesterday)


def test_viewers_see_the_terminal_but_no_action_buttons(client_for, viewer, world):
    html = client_for(viewer).get(url("terminals:detail", world["terminal"].public_id)).content
    assert b"Refresh status" not in html and b"Read a Mifare card" not in html
    assert b"Run closing now" not in html and b"Reprint last ticket" not in html
    assert b"Run again" not in html


def test_operators_see_the_action_buttons(client_for, operator, world):
    _no_closing_today(world)
    html = client_for(operator).get(url("terminals:detail", world["terminal"].public_id)).content
    for label in (
        b"Refresh status",
        b"Refresh card brands",
        b"Read a Mifare card",
        b"Run closing now",
        b"Reprint last ticket",
    ):
        assert label in html


def test_the_status_panel_is_a_fragment_of_the_detail_url(client_for, viewer, world):
    response = client_for(viewer).get(
        url("terminals:detail", world["terminal"].public_id),
        {"part": "status"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert b'id="terminal-status-badge"' in response.content and b"<html" not in response.content


def _detail(client, terminal, **params):
    return client.get(url("terminals:detail", terminal.public_id), params, HTTP_HX_REQUEST="true")


def _stamp(html: str) -> str:
    return html.split('id="panels-stamp" name="seen" value="')[1].split('"')[0]


def test_the_status_poll_fires_terminal_changed_when_a_brand_refresh_finished(
    client_for, viewer, world
):
    client = client_for(viewer)
    terminal = world["terminal"]
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    assert 'hx-include="#panels-stamp"' in page
    assert 'hx-trigger="terminal-changed from:body"' in page
    assert 'data-skip-if-filled="#closing-rerun input[name=reason]"' in page
    stamp = _stamp(page)
    # Nothing changed: no trigger, the poll stays cheap.
    assert "HX-Trigger" not in _detail(client, terminal, part="status", seen=stamp)
    # The job starts: the panels are out of date, and say it runs.
    run = f.make_job_run("brands", subject=terminal.terminal_id, outcome="running")
    response = _detail(client, terminal, part="status", seen=stamp)
    assert response["HX-Trigger"] == "terminal-changed"
    panels = _detail(client, terminal, part="panels").content.decode()
    assert "Refreshing…" in panels and "<html" not in panels
    # It finishes with a new brand list: that too is a change the panels pick up.
    stamp = _stamp(panels)
    run.outcome = "ok"
    run.save()
    terminal.brands.create(code="MAES", display_name="Maestro")
    Terminal.objects.filter(pk=terminal.pk).update(brands_refreshed_at=timezone.now())
    assert _detail(client, terminal, part="status", seen=stamp)["HX-Trigger"] == "terminal-changed"
    panels = _detail(client, terminal, part="panels").content.decode()
    assert "Maestro <small>MAES</small>" in panels and "Refreshing…" not in panels


def test_a_finished_closing_redraws_the_closings_panel_and_the_closing_action(
    client_for, operator, world
):
    client = client_for(operator)
    terminal = world["terminal"]
    _no_closing_today(world)
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "Run closing now" in page
    stamp = _stamp(page)
    f.make_closing(terminal, state="pending")
    assert _detail(client, terminal, part="status", seen=stamp)["HX-Trigger"] == "terminal-changed"
    panels = _detail(client, terminal, part="panels").content.decode()
    assert '<section id="closings-panel" aria-live="polite" hx-swap-oob="true">' in panels
    assert 'id="closing-action" class="contents" hx-swap-oob="true"' in panels
    assert 'id="closing-running"' in panels and "Run closing now" not in panels


def test_a_failed_brand_refresh_says_so_in_the_panel(client_for, viewer, world):
    terminal = world["terminal"]
    f.make_job_run(
        "brands", subject=terminal.terminal_id, outcome="failed", error="TerminalOffline: no answer"
    )
    html = client_for(viewer).get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "Last refresh failed" in html and "TerminalOffline: no answer" in html
    # A viewer's panels carry no closing action to swap.
    assert (
        'id="closing-action"'
        not in _detail(client_for(viewer), terminal, part="panels").content.decode()
    )


def test_the_list_poll_sends_rows_whose_last_seen_moved_on(client_for, viewer):
    site = f.make_site()
    old = timezone.now() - timedelta(hours=2)
    seen = f.make_terminal(site, status_changed_at=old, last_seen_at=timezone.now())
    quiet = f.make_terminal(site, status_changed_at=old, last_seen_at=old)
    since = (timezone.now() - timedelta(minutes=1)).isoformat()
    html = (
        client_for(viewer)
        .get(url("terminals:list"), {"since": since}, HTTP_HX_REQUEST="true")
        .content.decode()
    )
    assert f'id="terminal-{seen.public_id}" hx-swap-oob="true"' in html
    assert str(quiet.public_id) not in html


def test_an_unknown_terminal_is_404(client_for, viewer):
    assert (
        client_for(viewer)
        .get(url("terminals:detail", "00000000-0000-0000-0000-000000000000"))
        .status_code
        == 404
    )


ACTIONS = [
    ("terminals:refresh_status", "poll_terminal_status_task", 1),
    ("terminals:refresh_brands", "refresh_brands_task", 2),
    ("terminals:run_closing", "run_closing_task", 2),
    ("terminals:reprint", "reprint_ticket_task", 1),
]


@pytest.mark.parametrize("name,task,nargs", ACTIONS)
def test_operators_enqueue_terminal_actions_and_repeating_is_safe(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks, name, task, nargs
):
    _no_closing_today(world)  # a second closing request is refused by the task's claim
    terminal = world["terminal"]
    client = client_for(operator)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(url(name, terminal.public_id))
        assert response.status_code == 302
        assert response["Location"] == url("terminals:detail", terminal.public_id)
    assert [c[0] for c in enqueued] == [task, task]
    assert enqueued[0][1][0] == terminal.pk and len(enqueued[0][1]) == nargs
    if nargs == 2:
        assert enqueued[0][1][1] == "user:otto-operator"


@pytest.mark.parametrize("name,task,nargs", ACTIONS)
def test_viewers_cannot_run_terminal_actions(
    client_for, viewer, world, enqueued, name, task, nargs
):
    response = client_for(viewer).post(url(name, world["terminal"].public_id))
    assert response.status_code == 403
    assert enqueued == []


def test_terminal_actions_refuse_get(client_for, operator, world):
    assert (
        client_for(operator).get(url("terminals:reprint", world["terminal"].public_id)).status_code
        == 405
    )


def test_htmx_action_posts_answer_with_hx_location(client_for, operator, world, enqueued):
    response = client_for(operator).post(
        url("terminals:refresh_status", world["terminal"].public_id), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 204
    assert response["HX-Location"] == url("terminals:detail", world["terminal"].public_id)


def test_a_mifare_read_creates_a_row_enqueues_the_task_and_a_repeat_reuses_it(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    terminal = world["terminal"]
    client = client_for(operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url("terminals:mifare_start", terminal.public_id), HTTP_HX_REQUEST="true"
        )
    read = MifareRead.objects.get()
    assert read.terminal == terminal and read.requested_by == operator
    assert enqueued == [("read_mifare_task", (read.pk,))]
    html = response.content.decode()
    assert "<html" not in html
    assert f'hx-get="{url("terminals:mifare_status", read.public_id)}"' in html
    assert 'hx-trigger="every 1s"' in html
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("terminals:mifare_start", terminal.public_id))
    assert MifareRead.objects.count() == 1 and len(enqueued) == 1


def test_the_mifare_panel_says_how_long_the_terminal_waits_for_a_card(
    client_for, operator, world, enqueued
):
    terminal = world["terminal"]
    client = client_for(operator)
    started = client.post(url("terminals:mifare_start", terminal.public_id), HTTP_HX_REQUEST="true")
    assert "Waiting up to 180 s for a card" in started.content.decode()  # the default
    Terminal.objects.filter(pk=terminal.pk).update(
        profile={"port0": 4100, "port1": 4102, "timeouts": {"mifare_uid": 45}}
    )
    read = MifareRead.objects.get()
    status = client.get(url("terminals:mifare_status", read.public_id), HTTP_HX_REQUEST="true")
    assert "Waiting up to 45 s for a card" in status.content.decode()
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "Waiting up to 45 s for a card" in page
    plain = client.get(url("terminals:mifare_status", read.public_id)).content.decode()
    assert "Waiting up to 45 s for a card" in plain


def test_the_mifare_poll_continues_while_pending_and_stops_with_286_showing_the_uid(
    client_for, viewer, world
):
    read = MifareRead.objects.create(terminal=world["terminal"])
    client = client_for(viewer)
    status_url = url("terminals:mifare_status", read.public_id)
    pending = client.get(status_url, HTTP_HX_REQUEST="true")
    assert pending.status_code == 200 and b"every 1s" in pending.content
    read.state, read.uid, read.completed_at = (
        MifareRead.State.DONE,
        "04A23BC2D95E80",
        timezone.now(),
    )
    read.save()
    done = client.get(status_url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    assert b"04A23BC2D95E80" in done.content and b"every 1s" not in done.content
    # Without htmx it is a normal page.
    page = client.get(status_url)
    assert (
        page.status_code == 200 and b"<html" in page.content and b"04A23BC2D95E80" in page.content
    )


def test_viewers_cannot_start_a_mifare_read(client_for, viewer, world, enqueued):
    response = client_for(viewer).post(url("terminals:mifare_start", world["terminal"].public_id))
    assert response.status_code == 403
    assert not MifareRead.objects.exists() and enqueued == []


def test_users_without_a_role_get_403_on_actions(client_for, no_role_user, world, enqueued):
    response = client_for(no_role_user).post(url("terminals:reprint", world["terminal"].public_id))
    assert response.status_code == 403


def _messages(response) -> str:
    return " ".join(str(m) for m in response.context["messages"])


def test_a_closing_request_while_one_runs_is_refused(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    _no_closing_today(world)
    terminal = world["terminal"]
    f.make_closing(terminal, state=PeriodClosing.State.PENDING)  # a worker is running it
    client = client_for(operator)
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "is running" in page and "Run closing now" not in page and "Run again" not in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("terminals:run_closing", terminal.public_id), follow=True)
    assert enqueued == []
    assert "already running" in _messages(response)


def test_a_done_closing_runs_again_only_explicitly_with_a_reason_and_is_audited(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    terminal, done = world["terminal"], world["closing"]  # today's, mismatch
    client = client_for(operator)
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "Run closing now" not in page and "Run again" in page
    assert 'name="rerun" value="1"' in page and 'name="reason" required' in page
    closing_url = url("terminals:run_closing", terminal.public_id)
    with django_capture_on_commit_callbacks(execute=True):
        plain = client.post(closing_url, follow=True)
        no_reason = client.post(closing_url, {"rerun": "1", "reason": "  "}, follow=True)
    assert enqueued == []
    assert "already done" in _messages(plain)
    assert "reason is required" in _messages(no_reason)
    assert not AuditEvent.objects.filter(action="closing.rerun_requested").exists()

    reason = "terminal was swapped; close its period"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(closing_url, {"rerun": "1", "reason": reason}, follow=True)
    assert enqueued == [("run_closing_task", (terminal.pk, "user:otto-operator", done.pk, reason))]
    assert "started again" in _messages(response)
    row = AuditEvent.objects.get(action="closing.rerun_requested")
    assert (row.subject_type, row.subject_id) == ("terminals.terminal", str(terminal.pk))
    assert row.actor_user == operator and row.reason == reason
    assert row.data == {
        "business_date": done.business_date.isoformat(),
        "rerun_of": str(done.public_id),
    }


def test_the_days_closing_counts_when_it_is_older_than_the_closings_shown(
    client_for, operator, world
):
    """The page reads its closings and the day's in one query: the day's is found even when
    ten closings with a later period end push it off the list."""
    terminal = world["terminal"]  # world's closing is today's, done
    later = world["closing"].period_end + timedelta(hours=1)
    for day in range(1, 12):
        f.make_closing(
            terminal, business_date=timezone.localdate() - timedelta(days=day), period_end=later
        )
    page = client_for(operator).get(url("terminals:detail", terminal.public_id)).content.decode()
    assert "Run again" in page and "Run closing now" not in page
    assert str(world["closing"].public_id) not in page  # not among the ten shown


def test_recent_closings_picks_the_days_closing_as_closing_of_the_day_does(world):
    terminal = world["terminal"]
    _no_closing_today(world)
    now = timezone.now()
    assert services.recent_closings(terminal, 10, now) == (
        list(terminal.closings.all()[:10]),
        None,
    )
    f.make_closing(terminal, state=PeriodClosing.State.FAILED)
    dead = f.make_closing(terminal, state=PeriodClosing.State.PENDING)
    PeriodClosing.objects.filter(pk=dead.pk).update(created_at=now - timedelta(hours=1))
    done = f.make_closing(terminal, state=PeriodClosing.State.MISMATCH)
    assert services.recent_closings(terminal, 10, now)[1] == done
    running = f.make_closing(terminal, state=PeriodClosing.State.PENDING)
    f.make_closing(terminal, state=PeriodClosing.State.MATCHED)
    recent, of_the_day = services.recent_closings(terminal, 3, now)
    assert of_the_day == running == services.closing_of_the_day(terminal, now)
    assert recent == list(terminal.closings.all()[:3])


def test_the_page_loads_its_recent_transactions_after_it_is_shown(client_for, viewer, world):
    terminal = world["terminal"]
    client = client_for(viewer)
    page = client.get(url("terminals:detail", terminal.public_id)).content.decode()
    fragment = url("terminals:detail", terminal.public_id) + "?part=transactions"
    assert f'hx-get="{fragment}" hx-trigger="load" hx-swap="outerHTML"' in page
    # Without JavaScript: a real link to the terminal's sessions.
    assert f'href="{url("sessions:list")}?terminal={terminal.public_id}"' in page
    assert world["capture"].request_id not in page

    response = client.get(fragment, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert html.startswith('\n<section id="terminal-transactions">')
    assert f"#{world['capture'].request_id}" in html and f"#{world['auth'].request_id}" in html
    assert url("sessions:detail", world["closed"].public_id) in html
    # Asked for again (a reload): the same answer.
    assert client.get(fragment, HTTP_HX_REQUEST="true").content.decode() == html


def test_the_transactions_fragment_needs_a_login_and_a_role(
    client, client_for, no_role_user, world
):
    fragment = url("terminals:detail", world["terminal"].public_id) + "?part=transactions"
    # htmx is told to go to the login page (a 302 would be followed and swapped in).
    response = client.get(fragment, HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Redirect"].startswith("/login/")
    assert client_for(no_role_user).get(fragment, HTTP_HX_REQUEST="true").status_code == 403
