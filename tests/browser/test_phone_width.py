"""At phone width (390 px) the pages fit: no sideways page scroll, every menu link reachable."""

import pytest

from sessions.models import Operation
from tests.dashboard import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 390


@pytest.fixture
def phone(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": WIDTH, "height": 844}, is_mobile=True
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def data():
    site = f.make_site("Depot Utrecht, Lage Weide, parking garage level 2")
    f.make_tariff(site)
    terminal = f.make_terminal(site, name="IM30 at the far end of the parking garage")
    connector = f.make_connector(terminal)
    session = f.make_session(connector)
    auth = f.make_tx(session, Operation.AUTHORISE)
    f.make_tx(session, Operation.CAPTURE, amount_minor=450, original=auth, limit_minor=5000)
    f.make_exception(session=session)
    f.make_closing(terminal, state="mismatch", totals=[{"brand": "VISA", "terminal_count": 2}])
    return {"terminal": terminal, "session": session}


WIDE_JS = """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)
  .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""


def _scroll_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_pages_fit_a_phone_without_sideways_scrolling(phone, login, admin_user, data, screenshot):
    login(phone, admin_user)
    pages = {
        "overview": "/",
        "sessions": "/sessions/",
        "session": f"/sessions/{data['session'].public_id}/",
        "terminals": "/terminals/",
        "terminal": f"/terminals/{data['terminal'].public_id}/",
        "exceptions": "/exceptions/",
        "closings": "/closings/",
    }
    widths = {}
    for name, path in pages.items():
        phone.goto(path)
        phone.wait_for_load_state("networkidle")
        widths[name] = _scroll_width(phone)
        if widths[name] > WIDTH:
            print(name, phone.evaluate(WIDE_JS))
        screenshot(phone, f"phone-{name}")
    assert widths == dict.fromkeys(pages, WIDTH)


def test_every_menu_link_is_reachable_at_phone_width(phone, login, admin_user, data):
    login(phone, admin_user)
    for path in ("/", f"/terminals/{data['terminal'].public_id}/"):
        phone.goto(path)
        menu = phone.locator("nav[aria-label=Main] summary")
        if menu.count() and menu.first.is_visible():
            menu.first.click()
        links = phone.locator("nav[aria-label=Main] a")
        labels = [links.nth(i).inner_text().strip() for i in range(links.count())]
        for label in ("Overview", "Terminals", "Sessions", "Receipts", "Exceptions"):
            assert label in labels
        assert {"Closings", "Job runs", "Admin"} <= set(labels)
        for i in range(links.count()):
            link = links.nth(i)
            assert link.is_visible(), labels[i]
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (labels[i], box)
        logout = phone.get_by_role("button", name="Log out")
        assert logout.is_visible()
        box = logout.bounding_box()
        assert box["x"] + box["width"] <= WIDTH
