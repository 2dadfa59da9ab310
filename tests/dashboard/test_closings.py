"""Closings: list with filters and CSV, detail with mismatches and drill-down."""

import csv
import io

import pytest

from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def _csv(response):
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_closing_list_filters_by_terminal_and_state(client_for, viewer, world):
    other = f.make_terminal(world["site"], name="Other IM30")
    f.make_closing(other, state="matched", totals=[{"brand": "VISA"}])
    client = client_for(viewer)
    html = client.get(
        url("terminals:closings"), {"terminal": str(other.public_id)}
    ).content.decode()
    assert "Other IM30 <small>" in html and f"{world['terminal'].name} <small>" not in html
    html = client.get(url("terminals:closings"), {"state": "mismatch"}).content.decode()
    assert "Other IM30 <small>" not in html and f"{world['terminal'].name} <small>" in html


def test_a_bad_closing_date_is_named_on_the_field_and_not_used(client_for, viewer, world):
    html = client_for(viewer).get(url("terminals:closings"), {"to": "2026-13-45"}).content.decode()
    assert "“2026-13-45” is not a date (use YYYY-MM-DD); not filtering by this date." in html
    assert f"{world['terminal'].name} <small>" in html


def test_closings_export_for_dutch_excel_with_semicolons_and_decimal_commas(
    client_for, viewer, world
):
    client = client_for(viewer)
    response = client.get(url("terminals:closings"), {"format": "csv-excel-nl"})
    assert response["Content-Disposition"] == 'attachment; filename="closings-excel-nl.csv"'
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeffbusiness_date;terminal_id;")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    assert {r[5]: r[8] for r in rows[1:]} == {"VISA": "9,00", "ECMC": "3,00"}
    detail = client.get(
        url("terminals:closing_detail", world["closing"].public_id), {"format": "csv-excel-nl"}
    )
    assert b"".join(detail.streaming_content).decode("utf-8").startswith("\ufeffbusiness_date;")
    assert "format=csv-excel-nl" in client.get(url("terminals:closings")).content.decode()


def test_closing_csv_export_follows_the_filters(client_for, viewer, world):
    other = f.make_terminal(world["site"], name="Other IM30")
    f.make_closing(
        other,
        state="matched",
        totals=[{"brand": "VISA", "terminal_amount_minor": 1234, "our_amount_minor": 1234}],
    )
    response = client_for(viewer).get(
        url("terminals:closings"), {"state": "mismatch", "format": "csv"}
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = _csv(response)
    assert rows[0][0] == "business_date"
    assert {r[1] for r in rows[1:]} == {world["terminal"].terminal_id}
    visa = next(r for r in rows[1:] if r[5] == "VISA")
    assert visa[8] == "9.00" and visa[10] == "4.50" and visa[11] == "4.50" and visa[12] == "no"


def test_closing_detail_highlights_mismatches_and_drills_down_to_transactions(
    client_for, viewer, world
):
    client = client_for(viewer)
    detail = url("terminals:closing_detail", world["closing"].public_id)
    html = client.get(detail).content.decode()
    assert html.count('class="mismatch"') == 1  # VISA differs, ECMC matches
    assert "€\u00a09.00" in html and "€\u00a04.50" in html
    drill = client.get(detail, {"brand": "VISA"}, HTTP_HX_REQUEST="true")
    assert drill.status_code == 200 and b"<html" not in drill.content
    assert f"#{world['capture'].request_id}".encode() in drill.content
    assert str(world["closed"].public_id).encode() in drill.content


def test_closing_detail_csv(client_for, viewer, world):
    response = client_for(viewer).get(
        url("terminals:closing_detail", world["closing"].public_id), {"format": "csv"}
    )
    assert response["Content-Type"].startswith("text/csv")
    assert [r[5] for r in _csv(response)[1:]] == ["ECMC", "VISA"]


def test_closing_list_query_count_is_pinned(client_for, viewer, django_assert_max_num_queries):
    site = f.make_site()
    for terminal in f.bulk_terminals(site, 60):
        f.make_closing(terminal, totals=[{"brand": "VISA"}, {"brand": "ECMC"}])
    client = client_for(viewer)
    with django_assert_max_num_queries(9):  # 8 + the month calendar's one query
        response = client.get(url("terminals:closings"))
    assert "Page 1 of 2" in response.content.decode()
