"""Negative controls for evpay.testbed.ledger_check.

The soak passes only while these figures are 0, so each test injects the one fault a figure
names and checks that the figure moves (and that the fault-free case leaves them all at 0).
"""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from evpay.testbed.ledger_check import compare, wrong_card_stops
from sessions.models import (
    CloseReason,
    Operation,
    Outcome,
    SessionState,
    TerminalTransaction,
    TxState,
)
from terminals.emulator.ledger import EntryKind, LedgerEntry
from tests.dashboard.factories import (
    make_audit,
    make_connector,
    make_exception,
    make_session,
    make_site,
    make_terminal,
    make_tx,
)

pytestmark = pytest.mark.django_db

RESERVED = 5000
AUTH_STAN = "000001"
FIGURES = (
    "double_captures",
    "lost_money",
    "disagreements",
    "in_progress",
    "in_exception_queue",
    "unknown_to_us",
    "wrong_card_stops",
)
NONE = dict.fromkeys(FIGURES, 0)


# --- the terminal's side: entries shaped by the emulator's own dataclass (what /ledger serves)


def entry(terminal_id, kind, amount, stan, reservation_stan=""):
    return LedgerEntry(
        terminal_id=terminal_id,
        kind=kind,
        request_id="1",
        amount_minor=amount,
        currency="EUR",
        stan=stan,
        reservation_stan=reservation_stan,
    ).to_dict()


def reservation(terminal_id, stan=AUTH_STAN, amount=RESERVED):
    return entry(terminal_id, EntryKind.RESERVATION, amount, stan)


def capture(terminal_id, amount, stan="000002", reservation_stan=AUTH_STAN):
    return entry(terminal_id, EntryKind.CAPTURE, amount, stan, reservation_stan)


# --- our side


def our_session(*, captured=0, session_captured=None, state=SessionState.CLOSED):
    """A session with a successful authorisation of RESERVED (STAN AUTH_STAN) and, if
    `captured`, a successful capture of that amount recorded against it."""
    session_captured = captured if session_captured is None else session_captured
    session = make_session(
        make_connector(make_terminal()),
        state=state,
        authorised_amount_minor=RESERVED,
        captured_amount_minor=session_captured,
        cost_total_minor=session_captured,
        close_reason=CloseReason.CAPTURED if state == SessionState.CLOSED else "",
    )
    auth = make_tx(session, Operation.AUTHORISE, amount_minor=RESERVED, stan=AUTH_STAN)
    if captured:
        make_tx(
            session,
            Operation.CAPTURE,
            amount_minor=captured,
            original=auth,
            limit_minor=RESERVED,
            stan="000002",
        )
    return session


def counts(ledger, site=None):
    figures = compare(ledger, site)
    return {name: figures[name] for name in FIGURES}


# --- compare()


def test_reservation_captured_once_for_the_amount_we_recorded_counts_nothing():
    tid = our_session(captured=1200).terminal.terminal_id
    assert counts([reservation(tid), capture(tid, 1200)]) == NONE


def test_two_captures_of_one_reservation_are_a_double_capture():
    tid = our_session(captured=1200).terminal.terminal_id
    ledger = [reservation(tid), capture(tid, 1200), capture(tid, 1200, stan="000003")]
    assert counts(ledger)["double_captures"] == 1


def test_a_capture_above_the_reservation_is_a_double_capture():
    tid = our_session(captured=1200).terminal.terminal_id
    assert counts([reservation(tid), capture(tid, RESERVED + 1)])["double_captures"] == 1


@pytest.mark.parametrize("resolved_exception", [False, True], ids=["no-exception", "resolved"])
def test_unsettled_reservation_of_a_closed_session_is_lost_money(resolved_exception):
    session = our_session()
    if resolved_exception:
        # Only an exception still waiting for staff explains the money.
        make_exception(session=session, resolved=True)
    assert counts([reservation(session.terminal.terminal_id)]) == NONE | {"lost_money": 1}


def test_unsettled_reservation_with_an_open_exception_is_in_the_queue_not_lost():
    session = our_session()
    make_exception(session=session)
    ledger = [reservation(session.terminal.terminal_id)]
    assert counts(ledger) == NONE | {"in_exception_queue": 1}


def test_unsettled_reservation_of_an_open_session_is_in_progress_not_lost():
    session = our_session(state=SessionState.CHARGING)
    assert counts([reservation(session.terminal.terminal_id)]) == NONE | {"in_progress": 1}


@pytest.mark.parametrize("live", [True, False], ids=["live", "after-the-run"])
def test_a_reservation_behind_an_unanswered_authorisation_is_in_progress_only_on_a_live_stack(
    live,
):
    # check_ledger reads the ledger of a running stack: the terminal may have reserved while our
    # row still waits for its answer (no STAN yet). The soak compares after its recovery
    # window, where the same reservation is lost money.
    session = make_session(make_connector(make_terminal()), state=SessionState.AUTHORISING)
    make_tx(session, Operation.AUTHORISE, state=TxState.SENT, outcome=Outcome.PENDING, stan="")
    figures = compare([reservation(session.terminal.terminal_id)], live=live)
    counted = {name: figures[name] for name in FIGURES}
    assert counted == NONE | ({"in_progress": 1} if live else {"lost_money": 1})


@pytest.mark.parametrize(
    ("our_capture", "session_captured"),
    [(1200, 1200), (1200, 1234), (1234, 1200)],
    ids=["both-differ", "capture-row-differs", "session-total-differs"],
)
def test_captured_amount_differing_from_the_terminal_is_a_disagreement(
    our_capture, session_captured
):
    tid = our_session(captured=our_capture, session_captured=session_captured).terminal.terminal_id
    figures = counts([reservation(tid), capture(tid, 1234)])
    assert figures["disagreements"] >= 1
    assert figures["lost_money"] == figures["double_captures"] == 0


def test_settlement_of_a_reservation_unknown_to_us_is_a_disagreement():
    tid = make_terminal().terminal_id
    ledger = [reservation(tid, stan="000007"), capture(tid, 900, reservation_stan="000007")]
    assert counts(ledger) == NONE | {"disagreements": 1, "unknown_to_us": 1}


# --- wrong_card_stops()


_reads = itertools.count(1)


def stopped_by_card(*reads, site=None, linked=None, before_charging=False):
    """A session started by card tokA/parA and then stopped by a card; `reads` are the card
    reads on its terminal as (token, PAR, seconds before the stop; negative = after it).
    `linked`: index of the read the stop's audit row names (as stop_by_card writes it);
    None for rows written before stops named their read."""
    session = make_session(
        make_connector(make_terminal(site)),
        state=SessionState.STOPPING,
        close_reason="",
        card_token="tokA",
        card_par="parA",
    )
    now = timezone.now()
    created = []
    for token, par, seconds_before in reads:
        # Card reads belong to the terminal, not to a session (as stop_by_card opens them).
        created.append(
            TerminalTransaction.objects.create(
                terminal=session.terminal,
                operation=Operation.CARD_TOKEN,
                workstation_id="EVPAY1",
                request_id=f"R{next(_reads)}",
                state=TxState.COMPLETED,
                outcome=Outcome.SUCCESS,
                card_token=token,
                card_par=par,
                created_at=now - timedelta(seconds=seconds_before),
                deadline_at=now,
            )
        )
    data = {} if linked is None else {"card_read_tx": created[linked].pk}
    if before_charging:
        make_audit(
            session,
            "session.state",
            actor_label="stop-by-card",
            from_state=SessionState.AUTHORISED,
            to_state=SessionState.SETTLING,
            data=data,
            reason="stopped before charging: stopped by card 4111 **** **** 9999; priced 0",
        )
    else:
        make_audit(
            session,
            "session.state",
            actor_label="stop-by-card",
            from_state=SessionState.CHARGING,
            to_state=SessionState.STOPPING,
            data=data,
            reason="stopped by card 4111 **** **** 9999",
        )
    return session


@pytest.mark.parametrize(
    ("read_token", "read_par", "expected"),
    [("tokB", "parB", 1), ("tokA", "parB", 0), ("tokB", "parA", 0), ("tokB", "", 1)],
    ids=["other-card", "same-token", "wallet-same-par", "other-token-no-par"],
)
def test_stop_by_a_card_with_other_token_and_par_is_a_wrong_card_stop(
    read_token, read_par, expected
):
    stopped_by_card((read_token, read_par, 5))
    assert wrong_card_stops() == expected


def test_only_the_latest_card_read_before_the_stop_counts():
    # Earlier and later reads of another card on the same terminal must not be blamed.
    stopped_by_card(("tokB", "parB", 60), ("tokA", "parA", 5), ("tokC", "parC", -60))
    assert wrong_card_stops() == 0


def test_site_restricts_wrong_card_stops_to_that_sites_sessions():
    here, elsewhere = make_site(), make_site()
    stopped_by_card(("tokB", "parB", 5), site=here)
    stopped_by_card(("tokC", "parC", 5), site=elsewhere)
    stopped_by_card(("tokA", "parA", 5), site=elsewhere)
    assert wrong_card_stops(here) == 1
    assert wrong_card_stops() == 2
    assert compare([], here)["wrong_card_stops"] == 1


@pytest.mark.parametrize(("linked", "expected"), [(0, 0), (1, 1)], ids=["own-card", "other-card"])
def test_the_read_a_stop_names_decides_not_the_timing(linked, expected):
    # Two connectors, one reader: another driver's read can land between ours and the stop.
    stopped_by_card(("tokA", "parA", 10), ("tokB", "parB", 5), linked=linked)
    assert wrong_card_stops() == expected


def test_a_stop_before_charging_by_another_card_counts_too():
    stopped_by_card(("tokB", "parB", 5), linked=0, before_charging=True)
    assert wrong_card_stops() == 1


def test_a_chargers_free_text_reason_is_not_taken_for_a_card_stop():
    session = stopped_by_card(("tokB", "parB", 5), linked=0)
    make_audit(
        session,
        "session.state",
        actor_label="api:charger",
        to_state=SessionState.STOPPING,
        reason="driver said: stopped by card, then changed mind",
    )
    assert wrong_card_stops() == 1  # the real card stop only
