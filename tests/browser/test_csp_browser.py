"""The Content-Security-Policy breaks nothing: the main pages load without a CSP violation."""

import pytest

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


def test_the_main_pages_load_without_content_security_policy_violations(
    page, login, admin_user, data
):
    violations = []
    page.on(
        "console",
        lambda msg: (
            violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda error: violations.append(str(error)))
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
    ]
    for path in paths:
        response = page.goto(path)
        assert response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
    # One live poll on the overview goes through htmx under the policy too.
    page.goto("/")
    page.clock.install()
    with page.expect_request(lambda r: r.headers.get("x-evpay-poll") == "1"):
        page.clock.run_for(11_000)
    assert violations == []
