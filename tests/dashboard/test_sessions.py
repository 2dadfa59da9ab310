"""Sessions list (filters, search, sort, CSV), detail (timeline, transactions), operator actions."""

import csv
import dataclasses
import io
import re
import zoneinfo
from datetime import datetime, time, timedelta

import pytest
from django.utils import timezone

from evpay.models import AuditEvent, ExceptionRecord
from sessions import services
from sessions import views as session_views
from sessions.models import (
    ChargingSession,
    DeviceMessage,
    Operation,
    SessionState,
    TerminalTransaction,
)
from tests.dashboard import factories as f
from tests.dashboard.conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(db):
    a, b = f.make_site("Alpha"), f.make_site("Beta", currency="GBP", time_zone="Europe/London")
    ta, tb = f.make_terminal(a), f.make_terminal(b)
    ca, cb = f.make_connector(ta), f.make_connector(tb)
    now = timezone.now()
    s1 = f.make_session(
        ca,
        card_brand="VISA",
        pan_last4="1111",
        cost_total_minor=450,
        captured_amount_minor=450,
        card_token="tok-one",
        requested_at=now - timedelta(days=3),
    )
    s2 = f.make_session(
        ca,
        card_brand="ECMC",
        pan_last4="2222",
        cost_total_minor=1999,
        captured_amount_minor=1999,
        card_token="tok-two",
        requested_at=now - timedelta(days=1),
    )
    s3 = f.make_session(
        cb,
        state=SessionState.CHARGING,
        close_reason="",
        closed_at=None,
        currency="GBP",
        card_brand="VISA",
        pan_last4="3333",
        cost_total_minor=120,
        captured_amount_minor=0,
        card_token="tok-three",
        requested_at=now,
    )
    return {"sites": (a, b), "terminals": (ta, tb), "sessions": (s1, s2, s3)}


def _tokens(client, **params):
    html = client.get(url("sessions:list"), params).content.decode()
    return {s.card_token for s in ChargingSession.objects.all() if str(s.public_id) in html}


def test_session_list_filters(client_for, viewer, fleet):
    client = client_for(viewer)
    (a, _b), (_ta, tb) = fleet["sites"], fleet["terminals"]
    today = timezone.localdate()
    assert _tokens(client) == {"tok-one", "tok-two", "tok-three"}
    assert _tokens(client, state="charging") == {"tok-three"}
    assert _tokens(client, state="open") == {"tok-three"}
    assert _tokens(client, site=str(a.public_id)) == {"tok-one", "tok-two"}
    assert _tokens(client, terminal=str(tb.public_id)) == {"tok-three"}
    assert _tokens(client, brand="visa") == {"tok-one", "tok-three"}
    assert _tokens(client, min="4.50", max="19.98") == {"tok-one"}
    assert _tokens(client, min="1") == {"tok-one", "tok-two", "tok-three"}
    assert _tokens(client, **{"from": str(today - timedelta(days=2))}) == {"tok-two", "tok-three"}
    assert _tokens(client, to=str(today - timedelta(days=2))) == {"tok-one"}


def _list(client, **params):
    return client.get(url("sessions:list"), params).content.decode()


# A well-formed date outside 2000-2100 (9999-12-31) never reaches the page: the hostile-input
# middleware answers 400 naming the field (tests/hostile/test_staff_pages.py).
@pytest.mark.parametrize("bad", ["2026-13-45", "02-12-2026"])
def test_a_bad_date_says_so_on_the_field_and_does_not_filter_by_it(client_for, viewer, fleet, bad):
    client = client_for(viewer)
    html = _list(client, **{"from": bad, "state": "charging"})
    assert f"“{bad}” is not a date (use YYYY-MM-DD); not filtering by this date." in html
    assert 'aria-invalid="true"' in html
    # The other filters still apply.
    assert _tokens(client, **{"from": bad, "state": "charging"}) == {"tok-three"}


def test_a_bad_amount_says_so_and_the_list_is_not_filtered_by_it(client_for, viewer, fleet):
    client = client_for(viewer)
    html = _list(client, min="abc")
    assert "“abc” is not an amount (like 12.50); not filtering by minimum total." in html
    assert _tokens(client, min="abc") == {"tok-one", "tok-two", "tok-three"}
    assert _tokens(client, min="abc", max="4.50") == {"tok-one", "tok-three"}
    # An amount no till could hold is refused before the page by the hostile-input middleware.
    assert client.get(url("sessions:list"), {"max": "1e99"}).status_code == 400


def test_from_after_to_is_pointed_out(client_for, viewer, fleet):
    html = _list(client_for(viewer), **{"from": "2026-02-10", "to": "2026-02-01"})
    assert "before the “from” date, so nothing can match" in html


def test_the_fragment_updates_the_field_messages_out_of_band(client_for, viewer, fleet):
    client = client_for(viewer)
    response = client.get(url("sessions:list"), {"to": "02-12-2026"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert '<small id="f-to-error" class="error" hx-swap-oob="true">' in html
    assert "not filtering by this date" in html
    # A field that is fine gets its old message cleared.
    assert '<small id="f-from-error" class="error" hx-swap-oob="true"></small>' in html


def test_brands_are_a_choice_of_names_and_names_work_in_links(client_for, viewer, fleet):
    client = client_for(viewer)
    html = _list(client)
    assert '<option value="ECMC">Mastercard</option>' in html
    assert '<option value="MAES">Maestro</option>' in html
    assert ">ECMC " not in html  # the list shows the name, not the code
    assert _tokens(client, brand="ECMC") == {"tok-two"}
    assert _tokens(client, brand="Mastercard") == {"tok-two"}
    assert '<option value="ECMC" selected>Mastercard</option>' in _list(client, brand="mastercard")
    html = _list(client, brand="Mastercardd")
    assert "Unknown card brand “Mastercardd”; not filtering by brand." in html
    assert _tokens(client, brand="Mastercardd") == {"tok-one", "tok-two", "tok-three"}


def test_the_outcome_filter_picks_sessions_by_how_they_closed(client_for, viewer, fleet):
    client = client_for(viewer)
    s1, _s2, _s3 = fleet["sessions"]
    ChargingSession.objects.filter(pk=s1.pk).update(close_reason="released")
    assert _tokens(client, outcome="released") == {"tok-one"}
    assert _tokens(client, outcome="captured") == {"tok-two"}
    assert _tokens(client, outcome="failed") == set()
    assert "Reservation released" in _list(client)
    html = _list(client, outcome="nope")
    assert "Unknown outcome “nope”; not filtering by outcome." in html


def test_date_presets_use_each_sites_local_day(client_for, viewer, fleet):
    client = client_for(viewer)
    s1, s2, s3 = fleet["sessions"]
    assert _tokens(client, period="today") == {"tok-three"}
    assert _tokens(client, period="yesterday") == {"tok-two"}
    assert _tokens(client, period="last7") == {"tok-one", "tok-two", "tok-three"}
    # 00:30 local time in Amsterdam is still the previous day in UTC: the site's day counts.
    amsterdam = zoneinfo.ZoneInfo("Europe/Amsterdam")
    today = timezone.localtime(timezone.now(), amsterdam).date()
    just_after_midnight = datetime.combine(today, time(0, 30), amsterdam)
    ChargingSession.objects.filter(pk=s2.pk).update(requested_at=just_after_midnight)
    assert "tok-two" in _tokens(client, period="today")
    assert "tok-two" in _tokens(client, **{"from": str(today), "to": str(today)})
    assert "Unknown period" in _list(client, period="decade")


def test_search_by_bin_or_masked_card_number(client_for, viewer, fleet):
    client = client_for(viewer)
    s1, s2, _s3 = fleet["sessions"]
    ChargingSession.objects.filter(pk=s1.pk).update(masked_pan="541333******0434", pan_last4="0434")
    ChargingSession.objects.filter(pk=s2.pk).update(masked_pan="520473******0019", pan_last4="0019")
    assert _tokens(client, q="541333") == {"tok-one"}
    assert _tokens(client, q="541333******0434") == {"tok-one"}
    assert _tokens(client, q="541333…0434") == {"tok-one"}
    assert _tokens(client, q="5204 73** **** 0019") == {"tok-two"}
    assert _tokens(client, q="…0019") == {"tok-two"}
    assert _tokens(client, q="0434") == {"tok-one"}
    assert _tokens(client, q="999999") == set()


def test_session_search_by_id_token_and_last_four(client_for, viewer, fleet):
    client = client_for(viewer)
    s1, s2, _ = fleet["sessions"]
    assert _tokens(client, q=str(s2.public_id)) == {"tok-two"}
    assert _tokens(client, q="tok-one") == {"tok-one"}
    assert _tokens(client, q="3333") == {"tok-three"}
    assert _tokens(client, q="nothing") == set()


def test_sorting_uses_whitelisted_columns_and_ignores_others(client_for, viewer, fleet):
    client = client_for(viewer)
    s1, s2, s3 = fleet["sessions"]

    def order(sort):
        html = client.get(url("sessions:list"), {"sort": sort}).content.decode()
        return sorted((html.index(str(s.public_id)), s.card_token) for s in (s1, s2, s3))

    assert [t for _, t in order("-total")] == ["tok-two", "tok-one", "tok-three"]
    assert [t for _, t in order("total")] == ["tok-three", "tok-one", "tok-two"]
    assert [t for _, t in order("card_token")] == ["tok-three", "tok-two", "tok-one"]  # default
    assert [t for _, t in order("password")] == ["tok-three", "tok-two", "tok-one"]


def test_csv_export_streams_the_filtered_list(client_for, viewer, fleet):
    response = client_for(viewer).get(url("sessions:list"), {"brand": "VISA", "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["session", "requested_at", "site"]
    assert {r[0] for r in rows[1:]} == {
        str(fleet["sessions"][0].public_id),
        str(fleet["sessions"][2].public_id),
    }
    by_currency = {r[10]: r[12] for r in rows[1:]}
    assert by_currency == {"EUR": "4.50", "GBP": "1.20"}


def _csv_text(response) -> str:
    return b"".join(response.streaming_content).decode("utf-8")


def test_the_utc_export_stays_as_it_was_for_machines(client_for, viewer, fleet):
    s1 = fleet["sessions"][0]
    response = client_for(viewer).get(url("sessions:list"), {"format": "csv"})
    text = _csv_text(response)
    assert not text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][1] == "requested_at" and "time_zone" not in rows[0]
    row = next(r for r in rows if r[0] == str(s1.public_id))
    assert row[1] == s1.requested_at.isoformat() and row[1].endswith("+00:00")


def test_the_local_export_gives_site_times_with_their_offset(client_for, viewer, fleet):
    s1, _s2, s3 = fleet["sessions"]
    response = client_for(viewer).get(url("sessions:list"), {"format": "csv-local"})
    assert response["Content-Disposition"] == 'attachment; filename="sessions-local.csv"'
    rows = list(csv.reader(io.StringIO(_csv_text(response))))
    header = rows[0]
    assert header[1] == "requested_at_site_time" and header[-1] == "time_zone"
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    amsterdam = by_id[str(s1.public_id)]
    local = timezone.localtime(s1.requested_at, zoneinfo.ZoneInfo("Europe/Amsterdam"))
    assert amsterdam["requested_at_site_time"] == local.isoformat()
    assert amsterdam["requested_at_site_time"][-6:] in ("+01:00", "+02:00")
    assert amsterdam["time_zone"] == "Europe/Amsterdam" and amsterdam["total"] == "4.50"
    assert by_id[str(s3.public_id)]["time_zone"] == "Europe/London"


def test_the_dutch_excel_export_uses_semicolons_decimal_commas_and_a_bom(client_for, viewer, fleet):
    s2 = fleet["sessions"][1]
    response = client_for(viewer).get(url("sessions:list"), {"format": "csv-excel-nl"})
    text = _csv_text(response)
    assert text.startswith("\ufeffsession;requested_at_site_time;")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    header = rows[0]
    assert header[-2:] == ["utc_offset", "time_zone"]
    row = dict(zip(header, next(r for r in rows if r[0] == str(s2.public_id)), strict=True))
    local = timezone.localtime(s2.requested_at, zoneinfo.ZoneInfo("Europe/Amsterdam"))
    assert row["requested_at_site_time"] == local.strftime("%Y-%m-%d %H:%M:%S")
    assert row["utc_offset"] == local.isoformat()[-6:]
    assert row["total"] == "19,99" and row["energy_kwh"] == "10,000"


def test_the_list_links_all_three_exports_with_its_filters(client_for, viewer, fleet):
    html = _list(client_for(viewer), state="closed")
    assert "?state=closed&amp;format=csv-local" in html
    assert "?state=closed&amp;format=csv-excel-nl" in html
    assert "?state=closed&amp;format=csv" in html


def test_session_list_with_2000_sessions_keeps_a_fixed_query_count(
    client_for, viewer, django_assert_max_num_queries
):
    site = f.make_site()
    connectors = [f.make_connector(t) for t in f.bulk_terminals(site, 20)]
    f.bulk_sessions(connectors, 2000)
    client = client_for(viewer)
    with django_assert_max_num_queries(9):
        response = client.get(url("sessions:list"))
    assert "2000 results" in response.content.decode()
    # A deep page is a cursor (tests/dashboard/test_session_list_keyset.py), as cheap as page 1.
    deep = ChargingSession.objects.order_by("cost_total_minor", "id")[1500]
    with django_assert_max_num_queries(9):
        response = client.get(
            url("sessions:list"),
            {"sort": "total", "q": "0042", "after": f"{deep.cost_total_minor}~{deep.pk}"},
        )
    assert response.status_code == 200
    with django_assert_max_num_queries(7):
        response = client.get(url("sessions:list"), HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content
    # The sessions as values, and the names of their sites, terminals and connectors in three
    # small lookups (three joins per row cost more on a day of 11,000; issue 19).
    with django_assert_max_num_queries(8):
        response = client.get(url("sessions:list"), {"format": "csv"})
        assert len(b"".join(response.streaming_content).splitlines()) == 2001


def test_session_detail_shows_timeline_transactions_breakdown_and_receipt(
    client_for, viewer, world
):
    session = world["closed"]
    html = client_for(viewer).get(url("sessions:detail", session.public_id)).content.decode()
    assert html.index("session.started") < html.index("session.closed")
    assert '<details class="raw">' in html and "CardServiceRequest" in html
    assert "€\u00a04.50" in html and "€\u00a00.78" in html and "21%" in html
    assert "TOTAL EUR 4,50" in html
    assert "Depot Utrecht" in html


def _detail_html(client, session) -> str:
    return client.get(url("sessions:detail", session.public_id)).content.decode()


def test_the_timeline_speaks_in_words_not_audit_codes(client_for, viewer, world):
    session = world["closed"]
    f.make_audit(session, "session.state", from_state="charging", to_state="ended")
    f.make_audit(session, "tx.capture", from_state="pending", to_state="success")
    f.make_audit(session, "charger.meter_jump")  # not in the table: still words
    html = _detail_html(client_for(viewer), session)
    assert '<strong title="session.state">Charging ended</strong>' in html
    assert "(Charging → Charging ended, plugged in)" in html
    assert '<strong title="tx.capture">Terminal answered the capture</strong>' in html
    assert "(Pending → Approved / success)" in html
    assert '<strong title="charger.meter_jump">Charger: meter jump</strong>' in html
    assert "<strong>tx.capture</strong>" not in html


def test_receipt_copies_and_brands_have_their_everyday_names(client_for, viewer, world):
    session = world["closed"]
    f.make_receipt(world["capture"], seq=2)
    DeviceMessage.objects.filter(transaction=world["capture"], seq=2).update(
        target="PrinterReceipt"
    )
    ChargingSession.objects.filter(pk=session.pk).update(card_brand="ECMC")
    html = _detail_html(client_for(viewer), session)
    assert "<small>Merchant copy ·" in html and "<small>Cardholder copy ·" in html
    assert "<small>Printer ·" not in html
    assert "<dd>Mastercard " in html
    receipt = client_for(viewer).get(url("sessions:receipt", session.public_id)).content
    assert b"Mastercard" in receipt and b"ECMC" not in receipt


def test_authorisation_expiry_is_shown_only_while_the_session_is_open(client_for, viewer, world):
    client = client_for(viewer)
    assert "Authorisation expires" not in _detail_html(client, world["closed"])
    assert "Authorisation expires" in _detail_html(client, world["charging"])


def test_placeholders_are_hints_not_values_that_look_filled_in(client_for, viewer, world):
    client = client_for(viewer)
    for name in ("sessions:list", "sessions:receipts"):
        html = client.get(url(name)).content.decode()
        placeholders = re.findall(r'<input[^>]*placeholder="([^"]*)"', html)
        assert placeholders and all(p.startswith("e.g. ") for p in placeholders), placeholders
    # The card's last 4 digits get a hint too, so the empty box says what goes in it.
    assert 'placeholder="e.g. 4321"' in client.get(url("sessions:receipts")).content.decode()


def test_a_phone_wallet_stop_explains_why_the_card_numbers_differ(client_for, viewer, world):
    session = world["charging"]
    ChargingSession.objects.filter(pk=session.pk).update(
        masked_pan="541333******0434", card_brand="ECMC", card_token="mc-tok"
    )
    read = f.make_tx(
        session,
        Operation.CARD_TOKEN,
        masked_pan="520473******0019",
        card_token="mc-tok",
        amount_minor=0,
    )
    f.make_audit(
        session,
        "session.state",
        from_state="charging",
        to_state="stopping",
        reason="stopped by card 520473******0019",
        data={"card_read_tx": read.pk},
    )
    html = _detail_html(client_for(viewer), session)
    assert (
        "Card 520473******0019 differs from the paying card 541333******0434: a phone wallet "
        "pays with a device account number, so the digits differ, but the card token matched."
    ) in html
    # A stop with the same card needs no explanation.
    TerminalTransaction.objects.filter(pk=read.pk).update(masked_pan="541333******0434")
    assert "phone wallet" not in _detail_html(client_for(viewer), session)


def test_the_detail_summary_is_a_fragment_of_the_same_url_and_polls_only_while_open(
    client_for, viewer, world
):
    client = client_for(viewer)
    open_one = client.get(
        url("sessions:detail", world["charging"].public_id),
        {"part": "summary"},
        HTTP_HX_REQUEST="true",
    )
    assert b"<html" not in open_one.content and b"hx-trigger" in open_one.content
    closed = client.get(
        url("sessions:detail", world["closed"].public_id),
        {"part": "summary"},
        HTTP_HX_REQUEST="true",
    )
    assert b"<html" not in closed.content and b"hx-trigger" not in closed.content
    # An HX-Location after an action is an htmx request for the whole page.
    page = client.get(url("sessions:detail", world["closed"].public_id), HTTP_HX_REQUEST="true")
    assert b"<html" in page.content


def test_viewers_see_no_session_actions_and_get_403_on_post(client_for, viewer, world):
    client = client_for(viewer)
    session = world["charging"]
    html = client.get(url("sessions:detail", session.public_id)).content.decode()
    assert "Operator actions" not in html and "Capture now" not in html
    for name in (
        "sessions:capture",
        "sessions:release",
        "sessions:retry_recovery",
        "sessions:resolve",
    ):
        assert client.post(url(name, session.public_id), {"reason": "x"}).status_code == 403
    session.refresh_from_db()
    assert session.state == SessionState.CHARGING


def test_operators_see_actions_with_a_required_reason(client_for, operator, world):
    html = (
        client_for(operator)
        .get(url("sessions:detail", world["charging"].public_id))
        .content.decode()
    )
    # Nothing of this session has an unknown outcome, so there is nothing to retry.
    assert html.count('name="reason" required') == 3
    assert "hx-confirm=" in html
    for label in ("Capture now", "Release", "Resolve manually"):
        assert label in html
    assert "Retry recovery" not in html


def test_retry_recovery_is_offered_when_an_outcome_is_unknown(client_for, operator, world):
    from sessions.models import Operation
    from tests.dashboard import factories as f

    f.make_tx(world["charging"], Operation.AUTHORISE, state="unknown", outcome="unknown")
    html = (
        client_for(operator)
        .get(url("sessions:detail", world["charging"].public_id))
        .content.decode()
    )
    assert "Retry recovery" in html


def test_a_closed_session_offers_no_actions(client_for, operator, world):
    html = (
        client_for(operator).get(url("sessions:detail", world["closed"].public_id)).content.decode()
    )
    assert 'name="reason"' not in html and "Operator actions" not in html


def test_resolving_manually_closes_the_session_audits_and_a_repeat_is_safe(
    client_for, operator, world
):
    client = client_for(operator)
    session = world["charging"]
    target = url("sessions:resolve", session.public_id)
    for _ in range(2):
        response = client.post(target, {"reason": "checked the acquirer portal"})
        assert response.status_code == 302
        assert response["Location"] == url("sessions:detail", session.public_id)
    session.refresh_from_db()
    assert session.state == SessionState.CLOSED and session.close_reason == "resolved_manually"
    events = AuditEvent.objects.filter(
        session_ref=session.public_id, action="session.resolved_manually"
    )
    assert events.count() == 1 and events.get().actor_label == "otto-operator"


def test_an_action_without_a_reason_changes_nothing(client_for, operator, world):
    client = client_for(operator)
    session = world["charging"]
    response = client.post(
        url("sessions:resolve", session.public_id), {"reason": "  "}, follow=True
    )
    assert "a reason is required" in response.content.decode()
    session.refresh_from_db()
    assert session.state == SessionState.CHARGING


def test_a_journey_error_is_shown_as_a_message(client_for, operator, world):
    response = client_for(operator).post(
        url("sessions:release", world["closed"].public_id),
        {"reason": "driver complained"},
        follow=True,
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Release was not possible: nothing to release" in html


@pytest.mark.parametrize(
    "name,action,function",
    [
        ("sessions:capture", "capture", "operator_capture_now"),
        ("sessions:release", "release", "operator_release"),
        ("sessions:retry_recovery", "retry", "operator_retry_recovery"),
        ("sessions:resolve", "resolve", "resolve_manually"),
    ],
)
def test_each_action_calls_its_contract_service_with_the_user_and_reason(
    client_for, operator, world, monkeypatch, name, action, function
):
    real = session_views.ACTIONS[action]
    assert real.service is getattr(services, function)
    calls = []
    fake = dataclasses.replace(real, service=lambda s, u, r: calls.append((s.pk, u.pk, r)))
    monkeypatch.setitem(session_views.ACTIONS, action, fake)
    response = client_for(operator).post(
        url(name, world["charging"].public_id), {"reason": "why"}, HTTP_HX_REQUEST="true"
    )
    assert calls == [(world["charging"].pk, operator.pk, "why")]
    assert response.status_code == 204
    assert response["HX-Location"] == url("sessions:detail", world["charging"].public_id)


def test_session_actions_refuse_get_and_users_without_role(
    client_for, operator, no_role_user, world
):
    target = url("sessions:capture", world["charging"].public_id)
    assert client_for(operator).get(target).status_code == 405
    assert client_for(no_role_user).post(target, {"reason": "x"}).status_code == 403


# --------------------------------------------------------------------------- honest feedback


def _act(client, name, session, django_capture_on_commit_callbacks, **post):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url(name, session.public_id), {"reason": "driver left", **post}, follow=True
        )
    assert response.status_code == 200
    return response.content.decode()


def test_capture_now_says_the_capture_is_queued_not_done(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    session = world["charging"]
    html = _act(
        client_for(operator), "sessions:capture", session, django_capture_on_commit_callbacks
    )
    session.refresh_from_db()
    assert session.state == SessionState.SETTLING
    assert enqueued == [("settle_session_task", (session.pk,))]
    assert "Capture now: done." not in html
    assert (
        f"Capture of €\u00a0{session.cost_total_minor / 100:.2f} queued; this page updates when "
        "the terminal answers."
    ) in html


def test_capture_now_reports_the_capture_when_the_answer_is_already_in(
    client_for, operator, world, monkeypatch
):
    session = world["charging"]

    def captured_at_once(s, user, reason):  # an in-process worker: settled before we answer
        ChargingSession.objects.filter(pk=s.pk).update(
            state=SessionState.CLOSED, close_reason="captured", captured_amount_minor=321
        )

    fake = dataclasses.replace(session_views.ACTIONS["capture"], service=captured_at_once)
    monkeypatch.setitem(session_views.ACTIONS, "capture", fake)
    response = client_for(operator).post(
        url("sessions:capture", session.public_id), {"reason": "x"}, follow=True
    )
    html = response.content.decode()
    assert "Capture now: the terminal answered; €\u00a03.21 captured." in html
    assert "queued" not in html


def test_release_and_retry_say_what_they_queued(
    client_for, operator, world, enqueued, django_capture_on_commit_callbacks
):
    client = client_for(operator)
    session = world["charging"]
    f.make_tx(session, state="unknown", outcome="unknown")
    f.make_tx(session, Operation.CARD_TOKEN, state="sent", outcome="pending")
    html = _act(client, "sessions:retry_recovery", session, django_capture_on_commit_callbacks)
    assert "Recovery queued for 2 request(s); this page updates when the terminal answers." in html
    assert "Retry recovery: done." not in html
    html = _act(client, "sessions:release", session, django_capture_on_commit_callbacks)
    assert "Release queued; this page updates when the terminal answers." in html
    assert "Release: done." not in html


@pytest.mark.parametrize(
    "state,capture,release",
    [
        (
            SessionState.CHARGING,
            "End the session and capture its cost now?",
            "End the session, waive its cost and release the reservation?",
        ),
        (
            SessionState.ENDED,
            "Capture the session&#x27;s cost now?",
            "Waive the cost and release the reservation?",
        ),
        (
            SessionState.SETTLING,
            "Capture the session&#x27;s cost now?",
            "Waive the cost and release the reservation?",
        ),
    ],
)
def test_the_confirmation_fits_the_sessions_state(
    client_for, operator, world, state, capture, release
):
    session = world["charging"]
    ChargingSession.objects.filter(pk=session.pk).update(state=state)
    html = client_for(operator).get(url("sessions:detail", session.public_id)).content.decode()
    assert f'hx-confirm="{capture}" data-action="capture"' in html
    assert f'hx-confirm="{release}" data-action="release"' in html
    if state != SessionState.CHARGING:
        assert "End the session" not in html


def _stamp(html):
    return html.split('id="activity-stamp" name="seen" value="')[1].split('"')[0]


def test_the_summary_poll_says_when_the_rest_of_the_page_is_out_of_date(client_for, viewer, world):
    client = client_for(viewer)
    session = world["charging"]
    # Listed most severe first, so not in id order: the stamp must not depend on that.
    f.make_exception(session=session, severity=ExceptionRecord.Severity.CRITICAL)
    page = client.get(url("sessions:detail", session.public_id)).content.decode()
    assert 'hx-include="#activity-stamp"' in page
    assert 'hx-trigger="session-changed from:body"' in page
    assert 'data-skip-if-editing="details[open], textarea[placeholder]' in page
    seen = _stamp(page)

    def poll():
        return client.get(
            url("sessions:detail", session.public_id),
            {"part": "summary", "seen": seen},
            HTTP_HX_REQUEST="true",
        )

    assert "HX-Trigger" not in poll()
    # The terminal answers: a request row changes, the session closes.
    auth = f.make_tx(session, Operation.AUTHORISE)
    assert poll()["HX-Trigger"] == "session-changed"
    seen = _stamp(
        client.get(
            url("sessions:detail", session.public_id), {"part": "activity"}, HTTP_HX_REQUEST="true"
        ).content.decode()
    )
    f.make_tx(session, Operation.CAPTURE, state="sent", outcome="pending", original=auth)
    assert poll()["HX-Trigger"] == "session-changed"
    ChargingSession.objects.filter(pk=session.pk).update(state=SessionState.CLOSED)
    closed = poll()
    # Closed, but the page has not shown it yet: it keeps polling until it has.
    assert closed["HX-Trigger"] == "session-changed" and b"hx-trigger" in closed.content
    activity = client.get(
        url("sessions:detail", session.public_id), {"part": "activity"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<html" not in activity and "Terminal transactions" in activity
    seen = _stamp(activity)
    caught_up = poll()
    assert "HX-Trigger" not in caught_up and b"hx-trigger" not in caught_up.content


def test_the_activity_part_redraws_the_actions_for_the_new_state(client_for, operator, world):
    client = client_for(operator)
    session = world["charging"]
    activity = lambda: client.get(  # noqa: E731
        url("sessions:detail", session.public_id), {"part": "activity"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    before = activity()
    assert "<html" not in before and 'data-action="capture"' in before
    ChargingSession.objects.filter(pk=session.pk).update(
        state=SessionState.CLOSED, close_reason="captured", captured_amount_minor=450
    )
    html = activity()
    assert 'data-action="capture"' not in html and "Operator actions" not in html
    assert url("sessions:receipt", session.public_id) in html


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sort", "index"),
    [
        ("-requested", "session_requested"),
        ("-total", "session_total"),
        ("total", "session_total"),
        ("-closed", "session_closed"),
        ("closed", "session_closed"),
        ("-captured", "session_captured"),
        ("-energy", "session_energy"),
        ("state", "session_state_id"),
    ],
)
def test_the_session_list_order_is_read_from_an_index_not_sorted_from_a_scan(
    client_for, viewer, django_assert_max_num_queries, sort, index
):
    """On 1 M sessions the first page sorted the whole table (benchmarks/staff_pages.py); with
    sequential scans and sorts priced out (60 rows tell the planner nothing) it must find an
    index matching the list's ORDER BY, on the first page and on a page after a cursor
    (keyset: it seeks, it does not skip)."""
    from django.db import connection, transaction

    site = f.make_site()
    f.bulk_sessions([f.make_connector(t) for t in f.bulk_terminals(site, 2)], 60)
    qs, sort, _errors = session_views.session_queryset({"sort": sort})
    order = session_views.session_order(sort)
    row = qs[30]
    cursor_qs = qs.filter(order.after(getattr(row, order.field), row.pk))
    for query in (qs[:51], cursor_qs[:51]):
        sql, params = query.query.sql_with_params()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert index in plan and "Sort" not in plan.split(index)[0], plan
    client = client_for(viewer)
    with django_assert_max_num_queries(10):
        response = client.get(url("sessions:list"), {"sort": sort, "after": order.token(row)})
    assert response.status_code == 200
