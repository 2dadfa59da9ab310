"""What staff read when the charging app needs a person: one entry per exception kind.

Each text is a format string over the values the raiser passes (`raise_incident`), so the
wording lives here and the services only say which incident happened to what. Money is passed
as `<name>_minor` with `currency` and reaches the texts as `{<name>}`, already formatted
("€ 3.40"): staff never read minor units.
"""

from __future__ import annotations

from dataclasses import dataclass

from evpay.exceptions import raise_exception
from evpay.models import ExceptionRecord
from evpay.money import format_money

Kind = ExceptionRecord.Kind
Severity = ExceptionRecord.Severity


@dataclass(frozen=True)
class Incident:
    severity: int
    title: str
    what_happened: str
    suggested_actions: str


INCIDENTS = {
    Kind.STRANDED_AUTHORISATION: Incident(
        Severity.CRITICAL,
        "Authorisation #{request_id} on {terminal_id} approved for a closed session",
        "{amount} was reserved on card {masked_pan} (STAN {stan}) after session "
        "{session_id} was closed ({closed_as}).",
        "Release the reservation through the acquirer portal, or let it lapse; tell the driver "
        "if they ask about a pending amount.",
    ),
    Kind.UNKNOWN_OUTCOME: Incident(
        Severity.CRITICAL,
        "{operation} #{request_id} on {terminal_id}: outcome unknown",
        "The {operation_code} request for {amount} was sent at "
        "{sent_at:%Y-%m-%d %H:%M:%S} and no answer proves whether the terminal did it "
        "({attempts} recovery attempts). Last note: {note}.",
        "The terminal takes no new card payments until this is settled, so that recovery can "
        "still ask it about this request. Check the terminal (power, network) and its journal "
        "or the acquirer portal for this RequestID; then retry recovery, or resolve the session "
        "manually with a note (that frees the terminal). Do not capture again before knowing.",
    ),
    Kind.CAPTURE_FAILED: Incident(
        Severity.CRITICAL,
        "Could not {verb} session {session_id}",
        "The {verb} of {amount} failed: {why}.",
        "Check the terminal's ledger or the acquirer portal; capture again, release, or "
        "resolve manually with a note.",
    ),
    Kind.REFUSED_STOPS: Incident(
        Severity.WARNING,
        "{count} refused stop attempts at {terminal_name} in the last hour",
        "Cards that did not start any open session were presented to stop one.",
        "Check the terminal's display texts; talk to the site if a driver is stuck.",
    ),
    Kind.AUTH_EXPIRY: Incident(
        Severity.CRITICAL,
        "Authorisation of session {session_id} expires {expires_at:%Y-%m-%d %H:%M} unsettled",
        "The session is priced but its capture has not succeeded, and the card authorisation "
        "is about to lapse.",
        "Check the terminal and the capture's outcome; capture now or resolve manually before "
        "the deadline.",
    ),
    Kind.TERMINAL_OFFLINE: Incident(
        Severity.WARNING,
        "{terminal_name} is offline with {open_sessions} open session(s)",
        "Terminal {terminal_id} stopped answering status polls ({failures} in a row) while "
        "sessions were open on it.",
        "Check power and network at the site. Captures wait and are retried; sessions nearing "
        "their authorisation expiry will raise their own exceptions.",
    ),
    Kind.CHARGER_REPORT: Incident(
        Severity.WARNING,
        "Charger {charge_point}: {action} not applied as reported",
        "{problem} (session {session_id}).",
        "Check the charger's own transaction log and meter reading. Nothing more than what is "
        "provable was charged; if the charger's record shows the driver owes less, refund "
        "through the acquirer portal.",
    ),
    Kind.CLOSING_MISMATCH: Incident(
        Severity.CRITICAL,
        "Closing {business_date} on {terminal_name} does not match",
        "{explanations}",
        "Compare the terminal's journal with the transactions listed on the closing page; look "
        "for captures recorded on one side only.",
    ),
}


def raise_incident(
    kind: str,
    *,
    dedupe_key: str,
    subject,
    terminal_ref: str,
    session=None,
    data: dict | None = None,
    actor=None,
    **values,
) -> ExceptionRecord:
    """Open (or refresh) the exception for `kind`, its texts filled from `values`."""
    incident = INCIDENTS[kind]
    values = _with_money(values)
    return raise_exception(
        kind=kind,
        severity=incident.severity,
        title=incident.title.format(**values),
        what_happened=incident.what_happened.format(**values),
        suggested_actions=incident.suggested_actions.format(**values),
        dedupe_key=dedupe_key,
        subject=subject,
        session=session,
        terminal_ref=terminal_ref,
        data=data,
        actor=actor,
    )


def _with_money(values: dict) -> dict:
    """`amount_minor=340, currency="EUR"` -> also `amount="€ 3.40"` for the texts."""
    money = {
        # Stored in the exception's text: one number format whatever the language.
        name.removesuffix("_minor"): format_money(value, values["currency"], localize=False)
        for name, value in values.items()
        if name.endswith("_minor")
    }
    return values | money


def short_id(session) -> str:
    """How incident texts name a session: the start of its public id."""
    return str(session.public_id)[:8]
