"""Compares our records with the emulator's own ledger (the ground truth of what money moved).

Used by the end-to-end test, the demo and the soak command. Keys are (terminal id, STAN of
the reservation). Figures that must be 0:

- double_captures: a reservation captured more than once, or for more than it reserved;
- lost_money: reserved on the terminal, neither captured nor released, and not explained by
  a session still open on our side or an open exception for staff;
- disagreements: amount, count or state differs between us and the terminal for a
  reservation whose session we consider finished;
- wrong_card_stops: sessions stopped by a card whose token and PAR both differ from the one
  that started them.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q

from evpay.models import AuditEvent, ExceptionRecord
from sessions.models import ChargingSession, Operation, Outcome, SessionState, TerminalTransaction


def compare(ledger: list[dict], site=None, live: bool = False) -> dict:
    """`site`: only that site's sessions count for wrong-card stops (several runs, one DB).
    `live`: the stack is still running, so a reservation may belong to an authorisation whose
    answer is not recorded yet (the soak compares after its recovery window: not live)."""
    reservations = {}
    settlements = defaultdict(list)
    for entry in ledger:
        key = (entry["terminal_id"], entry.get("stan"))
        if entry["kind"] == "reservation":
            reservations[key] = entry
        elif entry["kind"] in ("capture", "release") and entry.get("reservation_stan"):
            settlements[(entry["terminal_id"], entry["reservation_stan"])].append(entry)

    ours = {}
    auths = TerminalTransaction.objects.filter(
        operation=Operation.AUTHORISE, outcome=Outcome.SUCCESS
    )
    for tx in auths.select_related("terminal", "session"):
        ours[(tx.terminal.terminal_id, tx.stan)] = tx
    our_settlements = defaultdict(list)
    for tx in TerminalTransaction.objects.filter(
        operation__in=[Operation.CAPTURE, Operation.RELEASE], outcome=Outcome.SUCCESS
    ).select_related("original__terminal"):
        our_settlements[(tx.original.terminal.terminal_id, tx.original.stan)].append(tx)

    # Terminals with an authorisation still undecided on our side (sent, or its outcome not yet
    # proven) for an open session: on a live stack, a reservation we cannot match there may be
    # that one, in flight when the ledger was read, not lost.
    undecided = live and set(
        TerminalTransaction.objects.filter(
            operation=Operation.AUTHORISE, outcome__in=[Outcome.PENDING, Outcome.UNKNOWN]
        )
        .exclude(session__state=SessionState.CLOSED)
        .values_list("terminal__terminal_id", flat=True)
    )
    open_exception_sessions = set(
        ExceptionRecord.objects.filter(
            resolved_at__isnull=True, session_ref__isnull=False
        ).values_list("session_ref", flat=True)
    )
    figures = {
        "reservations": len(reservations),
        "double_captures": 0,
        "lost_money": 0,
        "disagreements": 0,
        "in_progress": 0,
        "in_exception_queue": 0,
        "unknown_to_us": 0,
        "wrong_card_stops": 0,
    }
    problems = []
    for key, reservation in reservations.items():
        theirs = settlements.get(key, [])
        captures = [s for s in theirs if s["kind"] == "capture"]
        if (
            len(captures) > 1
            or sum(c["amount_minor"] for c in captures) > reservation["amount_minor"]
        ):
            figures["double_captures"] += 1
            problems.append(f"double capture on {key}: {captures}")
        auth = ours.get(key)
        session = auth.session if auth else None
        if not theirs:
            in_flight = auth is None and bool(undecided) and key[0] in undecided
            if in_flight or (session is not None and session.state != SessionState.CLOSED):
                figures["in_progress"] += 1
            elif session is not None and session.public_id in open_exception_sessions:
                figures["in_exception_queue"] += 1
            else:
                figures["lost_money"] += 1
                problems.append(
                    f"reservation {key} of {reservation['amount_minor']} never settled "
                    f"(our session: {session.state if session else 'none'})"
                )
            continue
        if auth is None:
            figures["unknown_to_us"] += 1
            figures["disagreements"] += 1
            problems.append(f"reservation {key} settled on the terminal but unknown to us")
            continue
        mine = our_settlements.get(key, [])
        their_view = sorted((s["kind"], s["amount_minor"]) for s in theirs)
        my_view = sorted((tx.operation, tx.amount_minor) for tx in mine)
        if their_view != my_view:
            if session and session.state != SessionState.CLOSED and not mine:
                figures["in_progress"] += 1  # settled on the terminal, recovery still to record it
            else:
                figures["disagreements"] += 1
                problems.append(f"{key}: terminal {their_view} vs ours {my_view}")
        if (
            session
            and session.state == SessionState.CLOSED
            and session.captured_amount_minor != sum(a for k, a in their_view if k == "capture")
        ):
            figures["disagreements"] += 1
            problems.append(
                f"{key}: session captured {session.captured_amount_minor}, terminal {their_view}"
            )
    figures["wrong_card_stops"] = wrong_card_stops(site)
    figures["problems"] = problems[:50]
    return figures


def wrong_card_stops(site=None) -> int:
    """Sessions stopped by a card read whose token and PAR both differ from the session's."""
    count = 0
    # Stops name their card read; older rows are recognised by the stop-by-card job's reason
    # (a charger's free-text stop reason could contain the same words).
    stops = AuditEvent.objects.filter(
        Q(data__has_key="card_read_tx")
        | Q(actor_label="stop-by-card", reason__contains="stopped by card"),
        action="session.state",
        to_state__in=[SessionState.STOPPING, SessionState.SETTLING],
    )
    if site is not None:
        refs = ChargingSession.objects.filter(site=site).values_list("public_id", flat=True)
        stops = stops.filter(session_ref__in=refs)
    for event in stops:
        session = ChargingSession.objects.filter(public_id=event.session_ref).first()
        if session is None:
            continue
        reads = TerminalTransaction.objects.filter(
            terminal=session.terminal, operation=Operation.CARD_TOKEN, outcome=Outcome.SUCCESS
        )
        if event.data.get("card_read_tx"):
            read = reads.filter(pk=event.data["card_read_tx"]).first()
        else:  # rows written before stops named their read: the latest read before the stop
            read = reads.filter(created_at__lte=event.at).order_by("-created_at").first()
        if read is None:
            continue
        same = (read.card_token and read.card_token == session.card_token) or (
            read.card_par and read.card_par == session.card_par
        )
        if not same:
            count += 1
    return count
