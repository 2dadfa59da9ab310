"""The Content-Security-Policy breaks nothing: the main pages load without a CSP violation, and
the live parts (polls, refreshes) work without eval: the policy has no 'unsafe-eval', htmx has
allowEval off, and the hx-trigger conditions are evpay.js's (data-poll-visible, data-skip-if-*)."""

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from sessions import receipts
from sessions.models import Operation
from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def data():
    site = f.make_site()
    f.make_tariff(site)
    terminal = f.make_terminal(site)
    session = f.make_session(f.make_connector(terminal))
    auth = f.make_tx(session, Operation.AUTHORISE)
    capture = f.make_tx(
        session, Operation.CAPTURE, amount_minor=450, original=auth, limit_minor=5000
    )
    f.make_receipt(capture)
    f.make_exception(session=session)
    f.make_closing(terminal, state="mismatch", totals=[{"brand": "VISA", "terminal_count": 2}])
    return {"terminal": terminal, "session": session}


def _watch(page):
    """Collects CSP violations, page errors and htmx's logged errors, among them
    htmx:evalDisallowedError (an hx-trigger filter left behind, with allowEval off)."""
    violations = []
    page.on(
        "console",
        lambda msg: (
            violations.append(msg.text)
            if "Content Security Policy" in msg.text
            or "Refused to" in msg.text
            or (msg.type == "error" and "htmx:" in msg.text)
            else None
        ),
    )
    page.on("pageerror", lambda error: violations.append(str(error)))
    return violations


def _polls(url_path):
    return lambda r: r.headers.get("x-evpay-poll") == "1" and urlparse(r.url).path == url_path


def test_the_main_pages_load_without_content_security_policy_violations(
    page, login, admin_user, data
):
    violations = _watch(page)
    login(page, admin_user)
    session = data["session"].public_id
    paths = [
        "/",
        "/terminals/",
        f"/terminals/{data['terminal'].public_id}/",
        "/sessions/",
        f"/sessions/{session}/",
        "/receipts/",
        f"/sessions/{session}/receipt/",
        "/exceptions/",
        "/closings/",
        "/jobs/",
        "/account/password/",
        "/admin/",
        # The drivers' pages (no login needed, but the same policy).
        "/receipt/",
        f"/r/{receipts.receipt_token(data['session'])}/",
        "/receipts/invoices/",
    ]
    for path in paths:
        response = page.goto(path)
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        # By directive: django-csp writes them in set order, which changes from run to run
        # (matching "script-src 'self';" failed whenever script-src came last).
        directives = {
            name: values
            for name, *values in (part.split() for part in policy.split(";") if part.strip())
        }
        assert directives["default-src"] == ["'self'"], path
        assert directives["script-src"] == ["'self'"] and "unsafe-eval" not in policy, path
        page.wait_for_load_state("networkidle")
    assert violations == []


def test_the_overview_polls_every_10s_while_visible_and_every_60s_while_hidden(
    page, login, admin_user, data
):
    violations = _watch(page)
    login(page, admin_user)
    page.clock.install()
    page.goto("/")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("htmx.config.allowEval") is False
    polls = []
    page.on("request", lambda r: polls.append(r.url) if _polls("/")(r) else None)
    with page.expect_response(lambda r: _polls("/")(r.request)):
        page.clock.run_for(11_000)
    assert len(polls) == 1
    # The tab goes to the background: the 10 s ticks are skipped, the sixth one polls.
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {get: () => 'hidden', configurable: true})"
    )
    page.clock.run_for(11_000)
    page.wait_for_timeout(500)
    assert len(polls) == 1
    with page.expect_request(_polls("/")):
        page.clock.run_for(50_000)
    assert len(polls) == 2
    assert violations == []


def test_the_session_page_refreshes_its_activity_except_while_an_action_is_open(
    page, login, operator, data
):
    from sessions.models import ChargingSession

    violations = _watch(page)
    session = f.make_session(
        f.make_connector(data["terminal"]),
        state="charging",
        close_reason="",
        closed_at=None,
        captured_amount_minor=0,
    )
    auth = f.make_tx(session, Operation.AUTHORISE)
    login(page, operator)
    page.clock.install()
    page.goto(f"/sessions/{session.public_id}/")
    page.wait_for_load_state("networkidle")
    parts = []
    page.on(
        "request",
        lambda r: parts.append(parse_qs(urlparse(r.url).query).get("part", ["page"])[0]),
    )

    # An action form open: the summary polls and says the activity changed; it stays put.
    page.locator("details", has_text="Capture now").locator("summary").click()
    f.make_tx(session, Operation.CAPTURE, state="sent", outcome="pending", original=auth)
    with page.expect_response(lambda r: "part=summary" in r.url):
        page.clock.run_for(11_000)
    page.wait_for_timeout(500)
    assert parts == ["summary"]
    expect(page.locator("details[open]", has_text="Capture now")).to_have_count(1)

    # Closed again: the next poll's session-changed fetches the activity part.
    page.locator("details", has_text="Capture now").locator("summary").click()
    ChargingSession.objects.filter(pk=session.pk).update(state="closed", close_reason="captured")
    with page.expect_response(lambda r: "part=activity" in r.url):
        page.clock.run_for(11_000)
    expect(page.locator("#session-state")).to_have_text("Closed")
    assert parts == ["summary", "summary", "activity"]
    assert violations == []
