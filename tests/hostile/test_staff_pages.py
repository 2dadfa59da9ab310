"""Every staff page, every filter and form field, a table of hostile values: never a 5xx, and a
refused value writes nothing.

The fields are not listed here: they are read from the rendered pages (form inputs, selects,
textareas; query parameters of links and hx-get), so a new filter or form is covered as soon as
a page renders it. On SQLite most of these were always harmless; PostgreSQL is where NUL in text,
NaN or 1e999999 as an amount and year 9999 + 1 day were 500s, so this runs there in CI.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from sessions import receipts
from sessions.models import InvoiceRequest
from terminals.models import MifareRead
from tests.dashboard.conftest import enqueued, world  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

HOSTILE = [
    "\x00",
    "\x00abc",
    "abc\x1bdef",
    "NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "1e999999",
    "9999-12-31",
    "0001-01-01",
    "2026-02-30T00:00:00",
    "2026-01-01T25:00:00",
    "2026-01-01T00:00:00+99:00",
    "x" * 300,
    "x" * 10_000,
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "-1",
    "99999999999999999999",
]
# Values the base layer refuses outright (400, nothing written), whatever the field.
REFUSED = {"\x00", "\x00abc", "abc\x1bdef", "x" * 10_000}

# Not crawled: Django's admin (its own forms), the API (tests/hostile/test_api_input.py,
# schemathesis), static files, and logout (it would end the crawl's session).
SKIP_PREFIXES = ("/admin/", "/api/", "/static/", "/logout/", "/healthz")


class FormsAndLinks(HTMLParser):
    """Forms (method, action, fields with their default values) and links with a query."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for attr in ("href", "hx-get"):
            if a.get(attr) and "?" in a[attr]:
                self.links.append(a[attr])
        if tag == "form":
            self._form = {
                "method": (a.get("method") or "get").lower(),
                "action": a.get("action") or "",
                "fields": {},
            }
            self.forms.append(self._form)
        elif self._form is not None and tag in ("input", "textarea", "select") and a.get("name"):
            if a.get("type") in ("submit", "button", "checkbox", "radio") and tag == "input":
                return
            self._form["fields"].setdefault(a["name"], a.get("value") or "")
            if tag == "select":
                self._select = a["name"]
        elif (
            tag == "option"
            and self._select
            and self._form is not None
            and not self._form["fields"][self._select]
            and a.get("value")
        ):
            self._form["fields"][self._select] = a["value"]

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


def parse(html: str) -> FormsAndLinks:
    parser = FormsAndLinks()
    parser.feed(html)
    return parser


def _patterns(resolver=None, prefix=""):
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def staff_urls(world) -> list[str]:  # noqa: F811  (the fixture's value, passed on)
    """Every staff URL with its ids filled from the world; fails on a URL it cannot fill, so a
    new page with a new kind of id gets a fixture here rather than going untested."""
    read = MifareRead.objects.create(terminal=world["terminal"])
    invoice = InvoiceRequest.objects.create(
        session=world["closed"],
        company_name="Acme B.V.",
        vat_number="NL123456789B01",
        address="Laan 2",
        email="finance@acme.example",
    )
    ids = {
        # The drivers' pages (no login) are crawled too: the link's token fills them.
        "r/": [receipts.receipt_token(world["closed"])],
        "receipts/invoices/": [invoice.public_id],
        "sessions/": [world["charging"].public_id, world["closed"].public_id],
        "terminals/mifare/": [read.public_id],
        "terminals/": [world["terminal"].public_id],
        "closings/": [world["closing"].public_id],
        "exceptions/": [world["exception"].public_id],
    }
    urls = []
    for route, _pattern in _patterns():
        path = "/" + route
        if path.startswith(SKIP_PREFIXES):
            continue
        if "<" not in path:
            urls.append(path.replace("^", "").replace("$", ""))
            continue
        head = path[1 : path.index("<")]
        filler = next((v for k, v in ids.items() if head == k), None)
        assert filler, f"no fixture id for {path}: add one to staff_urls()"
        for value in filler:
            urls.append("/" + head + str(value) + path[path.index(">") + 1 :])
    return sorted(set(urls))


def _counts():
    return {m._meta.label: m.objects.count() for m in apps.get_models() if _counted(m)}


def _counted(model):
    # Log-in bookkeeping and the session store change on every request by design; unmanaged
    # models (permission holders) have no table.
    if not model._meta.managed or model._meta.proxy:
        return False
    return model._meta.label not in ("sessions.Session",) and model._meta.app_label != "axes"


@pytest.fixture
def crawl(world, enqueued, admin_user):  # noqa: F811  (fixtures imported above)
    # A 500 is a status to report with the others, not an exception that ends the crawl.
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    pages = {}
    for url in staff_urls(world):
        response = client.get(url)
        assert response.status_code < 500, url
        if response.status_code == 200 and "text/html" in response["Content-Type"]:
            pages[url] = parse(response.content.decode())
    assert len(pages) >= 10, sorted(pages)
    return {"client": client, "pages": pages, "user": admin_user}


def _get_params(pages) -> set[tuple[str, str]]:
    """(path, parameter) for every GET form field and every linked query parameter."""
    pairs = set()
    for url, page in pages.items():
        for form in page.forms:
            if form["method"] == "get":
                path = urlsplit(form["action"]).path or url
                pairs |= {(path, name) for name in form["fields"]}
        for link in page.links:
            split = urlsplit(link)
            path = split.path or url
            if not path.startswith(SKIP_PREFIXES):
                pairs |= {(path, name) for name, _ in parse_qsl(split.query, True)}
    return pairs


def test_every_filter_of_every_page_survives_hostile_values(crawl):
    pairs = _get_params(crawl["pages"])
    names = {name for _, name in pairs}
    # The filters the issue named must have been found on the pages, not assumed.
    assert {"q", "brand", "kind", "min", "max", "from", "to", "amount", "date", "since"} <= names
    client = crawl["client"]
    before = _counts()
    errors, not_refused = [], []
    for path, name in sorted(pairs):
        for value in HOSTILE:
            response = client.get(path, {name: value})
            if response.status_code >= 500:
                errors.append((path, name, value[:30], response.status_code))
            elif value in REFUSED and response.status_code != 400:
                not_refused.append((path, name, value[:30], response.status_code))
    assert not errors, f"{len(errors)} server errors: {errors}"
    assert not not_refused, f"{len(not_refused)} not refused: {not_refused}"
    assert _counts() == before  # a GET writes nothing


def _post_forms(pages):
    seen = {}
    for url, page in pages.items():
        for form in page.forms:
            if form["method"] == "post":
                action = form["action"] or url
                if not action.startswith(SKIP_PREFIXES):
                    seen.setdefault(action, (url, form))
    return seen


def test_every_post_form_field_survives_hostile_values(crawl):
    client, user = crawl["client"], crawl["user"]
    forms = _post_forms(crawl["pages"])
    fields = {name for _, form in forms.values() for name in form["fields"]}
    assert {"note", "reason"} <= fields, fields
    errors, not_refused = [], []
    for action, (page_url, form) in sorted(forms.items()):
        for name in form["fields"]:
            if name == "csrfmiddlewaretoken":
                continue
            for value in HOSTILE:
                client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
                token = parse(client.get(page_url).content.decode())
                csrf = next(
                    (f["fields"].get("csrfmiddlewaretoken") for f in token.forms if f["fields"]),
                    None,
                )
                data = {k: (v or "filler") for k, v in form["fields"].items()}
                data |= {"csrfmiddlewaretoken": csrf, name: value}
                before = _counts()
                response = client.post(action, data)
                if response.status_code >= 500:
                    errors.append((action, name, value[:30], response.status_code))
                elif value in REFUSED and (response.status_code != 400 or _counts() != before):
                    not_refused.append((action, name, value[:30], response.status_code))
    assert not errors, f"{len(errors)} server errors: {errors}"
    assert not not_refused, f"{len(not_refused)} not refused or written: {not_refused}"


def test_the_login_form_survives_hostile_values(admin_user):
    client = Client(raise_request_exception=False)
    login = parse(client.get("/login/").content.decode()).forms[0]
    assert {"username", "password"} <= set(login["fields"])
    errors, not_refused = [], []
    for name in ("username", "password"):
        for value in HOSTILE:
            data = {k: (v or "filler") for k, v in login["fields"].items()} | {name: value}
            before = _counts()
            response = client.post("/login/", data)
            if response.status_code >= 500:
                errors.append((name, value[:30], response.status_code))
            elif value in REFUSED and (response.status_code != 400 or _counts() != before):
                not_refused.append((name, value[:30], response.status_code))
    assert not errors, f"{len(errors)} server errors: {errors}"
    assert not not_refused, f"{len(not_refused)} not refused or written: {not_refused}"


def test_a_refused_value_gets_a_400_page_naming_the_field_and_why(client, admin_user):
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/sessions/", {"min": "NaN", "q": "a\x00b"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "<strong>min</strong> is not a finite amount" in html
    assert "<strong>q</strong> contains a control character" in html
    # Not an amount at all is the page's own form error, as before.
    assert client.get("/receipts/", {"amount": "x"}).status_code == 200


def test_an_htmx_request_with_a_refused_value_gets_the_message_out_of_band(
    client,
    operator,
    world,  # noqa: F811
):
    client.force_login(operator, backend="django.contrib.auth.backends.ModelBackend")
    record = world["exception"]
    response = client.post(
        f"/exceptions/{record.public_id}/resolve/", {"note": "done\x00"}, HTTP_HX_REQUEST="true"
    )
    assert response["HX-Reswap"] == "none"
    html = response.content.decode()
    assert 'hx-swap-oob="true"' in html and "note contains a control character" in html
    record.refresh_from_db()
    assert record.resolved_at is None
