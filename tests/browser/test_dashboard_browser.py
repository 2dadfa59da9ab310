"""The dashboard in a real browser against a live server and an emulated IM30."""

import re

import pytest
from playwright.sync_api import expect

from sessions.models import Operation
from terminals.models import Terminal, TerminalStatus
from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TIMEOUTS = {"status": 3, "brands": 3, "mifare_uid": 8, "closing": 5, "ticket_reprint": 5}


@pytest.fixture
def emu_world(emulator):
    info = emulator.terminals[0]
    emulator.clear_faults(info["terminal_id"])
    emulator.set_offline(info["terminal_id"], False)
    site = f.make_site("Depot Utrecht")
    f.make_tariff(site)
    profile = {
        "port0": info["port0"],
        "port1": info["port1"],
        "channel1_listener": "terminal",
        "workstation_id": "EVPAY1",
        "timeouts": TIMEOUTS,
        "connect_timeout": 2,
    }
    terminal = Terminal.objects.create(
        terminal_id=info["terminal_id"],
        name="IM30 Gate",
        site=site,
        host=info["host"],
        profile=profile,
    )
    c1, c2 = f.make_connector(terminal), f.make_connector(terminal)
    return {"info": info, "site": site, "terminal": terminal, "connectors": (c1, c2)}


def _poll(terminal_pk):
    from terminals.tasks import poll_terminal_status_task

    poll_terminal_status_task(terminal_pk)


def test_operator_watches_a_terminal_go_offline_and_reads_a_mifare_card(
    page, login, operator, emulator, emu_world, eager_tasks, screenshot
):
    terminal, tid = emu_world["terminal"], emu_world["info"]["terminal_id"]
    _poll(terminal.pk)
    terminal.refresh_from_db()
    assert terminal.status not in (TerminalStatus.OFFLINE, TerminalStatus.UNKNOWN)

    login(page, operator)
    screenshot(page, "overview")
    page.get_by_role("link", name="Terminals").first.click()
    badge = page.locator(f"#terminal-{terminal.public_id} .badge")
    expect(badge).to_have_text(terminal.get_status_display())
    page.evaluate("window.__notReloaded = true")

    emulator.set_offline(tid, True)
    for _ in range(3):  # EVPAY_OFFLINE_AFTER_FAILURES failed polls mark it offline
        _poll(terminal.pk)
    assert Terminal.objects.get(pk=terminal.pk).status == TerminalStatus.OFFLINE
    expect(badge).to_have_text("Offline", timeout=12_000)
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "terminals")

    emulator.set_offline(tid, False)
    _poll(terminal.pk)
    page.get_by_role("link", name="IM30 Gate").click()
    expect(page.locator("#terminal-status-badge")).not_to_have_text("Offline")
    emulator.present_card(tid, "mifare_blue")
    page.get_by_role("button", name="Read a Mifare card").click()
    expect(page.locator("#mifare-uid")).to_have_text("04A23BC2D95E80", timeout=15_000)
    screenshot(page, "terminal-detail")


def test_operator_opens_a_session_and_its_receipt_and_resolves_an_exception(
    page, login, operator, emu_world, screenshot
):
    from sessions.models import Operation

    session = f.make_session(emu_world["connectors"][0])
    auth = f.make_tx(session, Operation.AUTHORISE)
    capture = f.make_tx(
        session, Operation.CAPTURE, amount_minor=450, original=auth, limit_minor=5000
    )
    f.make_receipt(capture, lines=["CCV IM30", "VISA **** 1234", "TOTAL EUR 4,50"])
    f.make_audit(session, "session.started", to_state="authorising")
    f.make_exception(session=session, title="Capture needs a look")

    login(page, operator)
    page.get_by_role("link", name="Sessions").first.click()
    page.locator(f"a[href='/sessions/{session.public_id}/']").click()
    expect(page.locator("#session-state")).to_have_text("Closed")
    expect(page.get_by_text("TOTAL EUR 4,50")).to_be_visible()
    screenshot(page, "session-detail")
    page.get_by_role("link", name="Receipt", exact=True).click()
    expect(page.locator("#receipt-total")).to_have_text(re.compile(r"4\.50"))
    screenshot(page, "receipt")

    # An operator action: a confirmation and a required reason, then back to the detail page.
    open_one = f.make_session(
        emu_world["connectors"][1],
        state="charging",
        close_reason="",
        closed_at=None,
        captured_amount_minor=0,
    )
    page.goto(f"/sessions/{open_one.public_id}/")
    page.locator("details", has_text="Resolve manually").locator("summary").click()
    page.get_by_label("Reason for “resolve manually”").fill("driver paid at the desk")
    page.locator("form[data-action=resolve] button[type=submit]").click()
    expect(page.locator("#messages")).to_contain_text("Resolve manually: done.")
    expect(page.locator("#session-state")).to_have_text("Closed")
    expect(page.locator(".timeline")).to_contain_text("driver paid at the desk")

    page.get_by_role("link", name="Exceptions").first.click()
    page.get_by_label("Resolution note").fill("checked with the acquirer")
    page.get_by_role("button", name="Resolve").click()
    row = page.locator("tr", has_text="Capture needs a look")
    expect(row.locator(".badge.ok")).to_have_text("Resolved")
    expect(page.locator("#messages")).to_contain_text("Resolved: Capture needs a look")
    screenshot(page, "exceptions")


def test_a_viewer_sees_no_action_buttons_and_is_refused_when_posting_anyway(
    page, login, viewer, emu_world, screenshot
):
    terminal = emu_world["terminal"]
    login(page, viewer)
    page.goto(f"/terminals/{terminal.public_id}/")
    expect(page.locator("h1")).to_contain_text("IM30 Gate")
    # The recent transactions come after the page, from their own fragment.
    expect(page.locator("#terminal-transactions table")).to_be_visible()
    expect(page.get_by_role("button", name="Read a Mifare card")).to_have_count(0)
    expect(page.get_by_role("button", name="Refresh status")).to_have_count(0)
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    response = page.request.post(
        f"/terminals/{terminal.public_id}/mifare/", headers={"X-CSRFToken": token}
    )
    assert response.status == 403
    screenshot(page, "terminal-detail-viewer")


@pytest.fixture
def quiet_settlement(monkeypatch):
    """Capture-now queues a settlement; here nobody works the queue (the live server runs in
    this process, so the patch reaches it) and the test plays the terminal's answer itself."""
    from sessions import tasks

    queued = []
    monkeypatch.setattr(tasks.settle_session_task, "delay", lambda *a: queued.append(a))
    return queued


def _charging_session(name="Depot Utrecht"):
    site = f.make_site(name)
    f.make_tariff(site)
    connector = f.make_connector(f.make_terminal(site))
    session = f.make_session(
        connector, state="charging", close_reason="", closed_at=None, captured_amount_minor=0
    )
    return session, f.make_tx(session, Operation.AUTHORISE)


def test_capture_now_says_it_is_queued_and_the_page_shows_the_answer_when_it_comes(
    page, login, operator, quiet_settlement, screenshot
):
    from sessions.models import ChargingSession

    session, auth = _charging_session()
    login(page, operator)
    page.clock.install()  # the summary polls every 10 s: the test moves the clock on
    page.goto(f"/sessions/{session.public_id}/")
    page.locator("details", has_text="Capture now").locator("summary").click()
    page.get_by_label("Reason for “capture now”").fill("driver left without unplugging")
    page.locator("form[data-action=capture] button[type=submit]").click()
    expect(page.locator("#messages")).to_contain_text(
        "queued; this page updates when the terminal answers."
    )
    expect(page.locator("#messages")).not_to_contain_text("done")
    expect(page.locator("#session-state")).to_have_text("Settling payment")
    assert quiet_settlement == [(session.pk,)]
    # Once settling, capturing again no longer means ending the session.
    confirm = page.locator("form[data-action=capture]").get_attribute("hx-confirm")
    assert confirm == "Capture the session's cost now?"

    # The terminal answers: the capture row, the session closed.
    session.refresh_from_db()
    capture = f.make_tx(
        session,
        Operation.CAPTURE,
        amount_minor=session.cost_total_minor,
        original=auth,
        limit_minor=5000,
    )
    ChargingSession.objects.filter(pk=session.pk).update(
        state="closed", close_reason="captured", captured_amount_minor=session.cost_total_minor
    )
    page.evaluate("window.__notReloaded = true")
    page.clock.run_for(11_000)
    expect(page.locator("#session-state")).to_have_text("Closed")
    expect(page.get_by_role("cell", name=f"#{capture.request_id}", exact=True)).to_be_visible()
    expect(page.locator("section[aria-labelledby=actions-title]")).to_have_count(0)
    expect(page.get_by_role("link", name="Receipt", exact=True)).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "session-captured-live")


def test_the_exceptions_queue_refreshes_itself_except_while_a_form_is_filled_in(
    page, login, operator, quiet_settlement, screenshot
):
    f.make_exception(title="First problem")
    login(page, operator)
    page.clock.install()
    page.goto("/exceptions/")
    expect(page.get_by_text("First problem")).to_be_visible()

    f.make_exception(title="Second problem")
    page.clock.run_for(16_000)
    expect(page.get_by_text("Second problem")).to_be_visible()

    row = page.locator("tr", has_text="First problem")
    row.get_by_label("Resolution note").fill("half typed")
    page.locator("h1").click()  # focus leaves the form; the typed note still holds the poll
    f.make_exception(title="Third problem")
    page.clock.run_for(16_000)
    page.wait_for_timeout(1_000)
    expect(page.get_by_text("Third problem")).to_have_count(0)
    expect(row.get_by_label("Resolution note")).to_have_value("half typed")

    row.get_by_label("Resolution note").fill("")
    page.locator("h1").click()
    page.clock.run_for(16_000)
    expect(page.get_by_text("Third problem")).to_be_visible()

    row = page.locator("tr", has_text="First problem")
    row.get_by_role("button", name="Assign to me").click()
    expect(row.locator(".assignee")).to_have_text("Assigned to otto-operator")
    expect(page.locator("#messages")).to_contain_text("Assigned to you: First problem")
    screenshot(page, "exceptions-assigned")

    # A filter replaces the results (no results inside results, so one poller, not two).
    page.get_by_label("Show").select_option("all")
    expect(page).to_have_url(re.compile(r"status=all"))
    expect(page.locator("#results")).to_have_count(1)
    assert "status=all" in page.locator("#results").get_attribute("hx-get")


def test_an_operator_captures_from_the_exceptions_queue(
    page, login, operator, quiet_settlement, screenshot
):
    session, _auth = _charging_session()
    f.make_exception(session=session, title="Authorisation about to lapse")
    login(page, operator)
    page.goto("/exceptions/")
    row = page.locator("tr", has_text="Authorisation about to lapse")
    row.locator("details", has_text="Capture now").locator("summary").click()
    row.get_by_label("Reason for “capture now”").fill("capture before the reservation lapses")
    row.locator("form[data-action=capture] button[type=submit]").click()
    expect(page.locator("#messages")).to_contain_text(
        "queued; this list updates when the terminal answers."
    )
    assert quiet_settlement == [(session.pk,)]
    session.refresh_from_db()
    assert session.state == "settling"
    screenshot(page, "exceptions-capture")


def test_a_bad_filter_value_is_named_on_its_field_and_cleared_when_fixed(
    page, login, viewer, screenshot
):
    site = f.make_site("Depot Utrecht")
    connector = f.make_connector(f.make_terminal(site))
    f.make_session(connector, card_brand="ECMC", cost_total_minor=450)
    f.make_session(connector, card_brand="VISA", cost_total_minor=1999)
    login(page, viewer)
    page.goto("/sessions/")
    page.get_by_label("Total at least").fill("abc")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#f-min-error")).to_have_text(
        "“abc” is not an amount (like 12.50); not filtering by minimum total."
    )
    expect(page.locator("#results tbody tr")).to_have_count(2)
    screenshot(page, "sessions-filter-message")
    page.get_by_label("Total at least").fill("5")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#f-min-error")).to_have_text("")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    page.get_by_label("Card brand").select_option(label="Mastercard")
    expect(page.locator("#results")).to_contain_text("No sessions match.")


def test_the_terminal_panels_show_a_finished_job_without_a_reload(
    page, login, operator, screenshot
):
    from django.utils import timezone

    from terminals.models import TerminalBrand

    site = f.make_site("Depot Utrecht")
    terminal = f.make_terminal(site, name="IM30 Gate", brands=("VISA",))
    login(page, operator)
    page.goto("/terminals/")
    row = page.locator(f"#terminal-{terminal.public_id}")
    expect(row).to_contain_text("Visa")
    page.evaluate("window.__notReloaded = true")
    # A status poll in the worker: only "last seen" moves; the list shows it live.
    seen_at = timezone.now()
    Terminal.objects.filter(pk=terminal.pk).update(last_seen_at=seen_at)
    expect(row.locator("td").nth(5)).not_to_have_text("—", timeout=12_000)

    page.get_by_role("link", name="IM30 Gate").click()
    panel = page.locator("#brands-panel")
    expect(panel).to_contain_text("Visa")
    page.evaluate("window.__notReloaded = true")
    # What the worker's brand refresh writes when it finishes.
    f.make_job_run("brands", subject=terminal.terminal_id, outcome="ok")
    TerminalBrand.objects.create(terminal=terminal, code="MAES", display_name="Maestro")
    Terminal.objects.filter(pk=terminal.pk).update(brands_refreshed_at=timezone.now())
    expect(panel).to_contain_text("Maestro", timeout=12_000)
    f.make_closing(terminal, state="pending")
    expect(page.locator("#closing-running")).to_be_visible(timeout=12_000)
    expect(page.locator("#closings-panel")).to_contain_text("Pending")
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "terminal-panels-refreshed")
