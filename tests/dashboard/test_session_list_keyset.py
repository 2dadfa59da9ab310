"""The session list pages by keyset (?after= / ?before= a row), in every sort, ties included."""

import html as html_lib
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from evpay import web
from sessions import views as session_views
from sessions.models import ChargingSession
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db

ROW = re.compile(r'href="/sessions/([0-9a-f-]{36})/"')
LINK = r'<a href="\?([^"]*)"[^>]*rel="{rel}"'


@pytest.fixture
def tied(db):
    """130 sessions whose every sort column repeats (and closed_at is often empty), so pages
    end in the middle of runs of equal values: only the id decides there."""
    site = f.make_site()
    # One connector each: an open session holds its connector (session_one_open_per_connector).
    connectors = [f.make_connector(t) for t in f.bulk_terminals(site, 65) for _ in range(2)]
    sessions = f.bulk_sessions(connectors, 130)
    for i, s in enumerate(sessions):
        s.requested_at = s.requested_at.replace(microsecond=0) - timedelta(minutes=i % 3)
        s.requested_at -= timedelta(minutes=(i // 3) * 3)
        s.closed_at = None if i % 4 == 0 else s.requested_at + timedelta(minutes=i % 2)
        s.cost_total_minor = s.captured_amount_minor = (i % 7) * 100
        s.energy_wh = (i % 5) * 1000
        s.state = ("closed", "ended", "charging")[i % 3]
    ChargingSession.objects.bulk_update(
        sessions,
        ["requested_at", "closed_at", "cost_total_minor", "captured_amount_minor", "energy_wh",
         "state"],
    )  # fmt: skip
    return sessions


def _expected(sort: str) -> list[str]:
    """The order by hand: the column (empty above every value), then id, both one direction."""
    field = session_views.SORTS[sort.lstrip("-")]
    rows = list(ChargingSession.objects.values_list(field, "id", "public_id"))

    def key(row):
        value, pk, _ = row
        return (value is None, value if value is not None else 0, pk)

    return [str(r[2]) for r in sorted(rows, key=key, reverse=sort.startswith("-"))]


def _get(client, query: str):
    response = client.get(f"{url('sessions:list')}?{query}")
    assert response.status_code == 200, response.content[:500]
    text = response.content.decode()
    ids = ROW.findall(text)

    def link(rel):
        match = re.search(LINK.format(rel=rel), text)
        return html_lib.unescape(match.group(1)) if match else None

    return ids, link("next"), link("prev"), text


@pytest.mark.parametrize("sort", [s for key in session_views.SORTS for s in (key, f"-{key}")])
def test_next_and_previous_walk_every_sort_without_gaps_or_repeats(client_for, viewer, tied, sort):
    client = client_for(viewer)
    pages, query = [], f"sort={sort}"
    while query:
        ids, next_query, prev_query, _text = _get(client, query)
        assert (prev_query is None) == (not pages)
        pages.append(ids)
        query = next_query
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [i for p in pages for i in p] == _expected(sort)
    # And back from the last page by "previous": the same pages, in reverse.
    query = urlencode({"sort": sort, "after": _last_cursor(sort, pages)})
    _ids, _next, query, _text = _get(client, query)
    back = []
    while query:
        ids, _next, query, _text = _get(client, query)
        back.append(ids)
    assert back == pages[-2::-1]


def _last_cursor(sort, pages) -> str:
    """The cursor of the row before the last page (what its "next" link said)."""
    order = session_views.session_order(sort)
    row = ChargingSession.objects.get(public_id=pages[-2][-1])
    return order.token(row)


def test_a_deep_page_by_cursor_keeps_to_ten_queries(
    client_for, viewer, tied, django_assert_max_num_queries
):
    client = client_for(viewer)
    _ids, next_query, _prev, _text = _get(client, "sort=-total")
    with django_assert_max_num_queries(10):
        ids, _next, prev_query, text = _get(client, next_query)
    assert len(ids) == 50 and prev_query and "130 results" in text
    with django_assert_max_num_queries(8):
        response = client.get(f"{url('sessions:list')}?{next_query}", HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content and b'rel="prev"' in response.content


def test_the_count_stops_at_the_limit_and_says_more_than(client_for, viewer, tied, monkeypatch):
    monkeypatch.setattr(web, "COUNT_LIMIT", 100)
    _ids, _next, _prev, text = _get(client_for(viewer), "")
    assert "More than 100 results" in text


def test_a_cursor_the_list_did_not_write_is_a_400(client_for, viewer, tied):
    client = client_for(viewer)
    for bad in ("nonsense", "2026-13-45T00:00:00~1", "~1", "5~x"):
        response = client.get(url("sessions:list"), {"sort": "-requested", "after": bad})
        assert response.status_code == 400, bad
    # closed_at may be empty, so "~id" is a real cursor there.
    assert client.get(url("sessions:list"), {"sort": "closed", "after": "~1"}).status_code == 200


def test_a_cursor_past_the_end_shows_no_rows_and_a_link_to_the_first_page(client_for, viewer, tied):
    ids, next_query, prev_query, text = _get(client_for(viewer), "sort=-total&after=0~0")
    assert ids == [] and next_query is None and prev_query is None
    assert 'rel="first"' not in text and ">First page</a>" in text


def test_sorting_or_filtering_starts_again_from_the_first_page(client_for, viewer, tied):
    _ids, next_query, _prev, text = _get(client_for(viewer), "sort=-total")
    _ids, _next, _prev, text = _get(client_for(viewer), next_query)
    assert "after=" in next_query
    sort_links = re.findall(r'<th scope="col"[^>]*><a href="\?([^"]*)"', text)
    export_links = re.findall(r'href="\?([^"]*format=[^"]*)"', text)
    assert len(sort_links) == 5 and len(export_links) == 3
    assert not any("after=" in q or "before=" in q for q in sort_links + export_links)
