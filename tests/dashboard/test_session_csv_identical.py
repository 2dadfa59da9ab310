"""The fast export (value rows, name lookups, times as text, memoised amounts) writes the same
bytes as the plain one it replaced: model instances formatted field by field (issue 19)."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from evpay.money import to_decimal_string
from evpay.templatetags.evpay_tags import site_zone
from evpay.web import CSV_FLAVOURS
from sessions import views as session_views
from sessions.models import ChargingSession
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


def _plain_rows(flavour):
    """The export as it was written before: one session instance at a time."""
    number = flavour.number
    for s in ChargingSession.objects.select_related("site", "terminal", "connector").order_by(
        "-requested_at", "-id"
    ):
        c, zone = s.currency, site_zone(s.site)
        row = [
            s.public_id,
            flavour.time(s.requested_at, zone),
            s.site.name,
            s.terminal.terminal_id,
            s.connector.evse_id,
            s.state,
            s.close_reason,
            s.card_brand,
            s.masked_pan,
            number(f"{s.energy_wh / 1000:.3f}"),
            c,
            number(to_decimal_string(s.authorised_amount_minor, c)),
            number(to_decimal_string(s.cost_total_minor, c)),
            number(to_decimal_string(s.cost_vat_minor, c)),
            number(to_decimal_string(s.captured_amount_minor, c)),
            flavour.time(s.closed_at, zone),
        ]
        if flavour.decimal_comma:
            row.append(flavour.offset(s.requested_at, zone))
        if flavour.local:
            row.append(s.site.time_zone)
        yield row


@pytest.fixture
def varied(db):
    """Two zones and currencies (one without decimals), open sessions without a close time,
    times with and without microseconds, either side of a daylight-saving change."""
    amsterdam = f.make_site("Amsterdam", time_zone="Europe/Amsterdam")
    tokyo = f.make_site("Tokyo", currency="JPY", time_zone="Asia/Tokyo")
    connectors = [f.make_connector(f.make_terminal(site)) for site in (amsterdam, tokyo)]
    dst = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    times = [dst, dst + timedelta(hours=1, microseconds=1), timezone.now().replace(microsecond=0)]
    for i, at in enumerate(times * 4):
        connector = connectors[i % 2]
        f.make_session(
            connector,
            currency="EUR" if i % 2 == 0 else "JPY",
            requested_at=at - timedelta(minutes=i),
            closed_at=None if i % 5 == 0 else at + timedelta(minutes=40, microseconds=i * 7),
            state="closed",
            energy_wh=1005 * i + 1,
            cost_total_minor=i * 101,
            cost_vat_minor=i * 17,
            captured_amount_minor=i * 101,
            authorised_amount_minor=5000,
        )


@pytest.mark.parametrize("key", list(CSV_FLAVOURS))
def test_the_streamed_export_writes_what_the_plain_one_did(client_for, viewer, varied, key):
    flavour = CSV_FLAVOURS[key]
    response = client_for(viewer).get(url("sessions:list"), {"format": key})
    text = b"".join(response.streaming_content).decode("utf-8")
    expected = io.StringIO()
    writer = csv.writer(expected, delimiter=flavour.delimiter)
    expected.write("\ufeff" if flavour.bom else "")
    writer.writerow(session_views.csv_header(flavour))
    writer.writerows(_plain_rows(flavour))
    assert text.count("\n") == 13
    assert text == expected.getvalue()
