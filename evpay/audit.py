"""One audit trail for sessions, payments, terminals and operator actions."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext, gettext_lazy

from evpay.models import AuditEvent
from evpay.pan import mask_pans
from evpay.validation import text_error

StrOrPromise = str | Promise  # a label, translated when shown


class InvalidReason(ValueError):
    """A reason from outside (a charger's API request) carries control characters."""


@dataclass(frozen=True)
class Actor:
    """Who or what caused a change: a staff user, a charger (API key), a job, a terminal."""

    kind: str  # one of AuditEvent.ActorKind
    label: str
    user_id: int | None = None

    @classmethod
    def user(cls, user) -> Actor:
        return cls(AuditEvent.ActorKind.USER, user.get_username(), user.pk)

    @classmethod
    def charger(cls, label: str) -> Actor:
        return cls(AuditEvent.ActorKind.CHARGER, label)

    @classmethod
    def job(cls, name: str) -> Actor:
        return cls(AuditEvent.ActorKind.JOB, name)

    @classmethod
    def terminal(cls, terminal_id: str) -> Actor:
        return cls(AuditEvent.ActorKind.TERMINAL, terminal_id)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(AuditEvent.ActorKind.SYSTEM, label)


def record(
    actor: Actor,
    subject,
    action: str,
    *,
    from_state: str = "",
    to_state: str = "",
    reason: str = "",
    session=None,
    data: dict | None = None,
) -> AuditEvent:
    """Write one audit row. `session` groups rows on the session's timeline.

    A charger's reason is refused (InvalidReason, the API's 422) when it carries control
    characters, so the transition it explains is rolled back with it; staff input is checked
    by the hostile-input middleware, and our own reasons (jobs, terminals) are never refused:
    a money record must not fail over the text a terminal sent.
    """
    if actor.kind == AuditEvent.ActorKind.CHARGER:
        error = text_error(reason)
        if error:
            raise InvalidReason(f"reason {error}")
    session = session if session is not None else getattr(subject, "session", None)
    return AuditEvent.objects.create(
        actor_kind=actor.kind,
        actor_label=actor.label[:150],
        actor_user_id=actor.user_id,
        subject_type=subject._meta.label_lower,
        subject_id=str(subject.pk),
        session_ref=getattr(session, "public_id", None),
        action=action,
        from_state=from_state or "",
        to_state=to_state or "",
        # A reason may quote a terminal or be typed by staff: no card number in it at rest.
        reason=mask_pans(reason[:2000]),
        data=data or {},
    )


# What staff read for an audit action on a timeline. The codes stay in the database and the
# admin (they are what code and queries match on); an action missing here still reads as
# words (see action_label), so adding one never shows a raw code.
ACTION_LABELS: dict[str, StrOrPromise] = {
    "session.created": gettext_lazy("Session requested"),
    "session.started": gettext_lazy("Session started"),
    "session.closed": gettext_lazy("Session closed"),
    "session.resolved_manually": gettext_lazy("Resolved manually by staff"),
    "tx.authorise": gettext_lazy("Terminal answered the authorisation"),
    "tx.card_token": gettext_lazy("Terminal read the card"),
    "tx.capture": gettext_lazy("Terminal answered the capture"),
    "tx.release": gettext_lazy("Terminal answered the release of the reservation"),
    "tx.reprint": gettext_lazy("Terminal answered the ticket reprint"),
    "tx.recovery": gettext_lazy("Recovery checked the outcome with the terminal"),
    "tx.repeat_last_message": gettext_lazy("Terminal repeated its last answer"),
    "tx.late_answer": gettext_lazy("Terminal answered after we stopped waiting"),
    "tx.resolved_manually": gettext_lazy("Terminal request resolved by staff"),
    "stop.refused": gettext_lazy("Stop by card refused"),
    "guard.expiry": gettext_lazy("Authorisation close to expiring"),
    "operator.capture_now": gettext_lazy("Staff asked to capture now"),
    "operator.release": gettext_lazy("Staff asked to release the reservation"),
    "operator.retry_recovery": gettext_lazy("Staff asked to retry recovery"),
    "exception.raised": gettext_lazy("Exception raised"),
    "exception.resolved": gettext_lazy("Exception resolved"),
    "exception.assigned": gettext_lazy("Exception assigned"),
    "exception.unassigned": gettext_lazy("Exception unassigned"),
    "exception.retry": gettext_lazy("Exception: recovery retried"),
    "terminal.status": gettext_lazy("Terminal status changed"),
    "terminal.brands": gettext_lazy("Card brands refreshed"),
    "terminal.reprint": gettext_lazy("Ticket reprint"),
    "terminal.mifare": gettext_lazy("Mifare card read"),
    "closing.reconciled": gettext_lazy("Closing reconciled"),
    "closing.unverified": gettext_lazy("Closing could not be verified"),
    "closing.abandoned": gettext_lazy("Closing abandoned"),
    "closing.rerun_requested": gettext_lazy("Closing asked to run again"),
    "closing.rerun": gettext_lazy("Closing ran again"),
    "account.password_changed": gettext_lazy("Password changed"),
    "account.otp_enrolled": gettext_lazy("Authenticator app set up"),
    "account.language_changed": gettext_lazy("Language changed"),
}

# "session.state" rows are named by the state the session moved to.
SESSION_STATE_LABELS: dict[str, StrOrPromise] = {
    "authorising": gettext_lazy("Waiting for the card"),
    "authorised": gettext_lazy("Card authorised"),
    "charging": gettext_lazy("Charging started"),
    "stopping": gettext_lazy("Stop requested"),
    "ended": gettext_lazy("Charging ended"),
    "settling": gettext_lazy("Settling the payment"),
    "closed": gettext_lazy("Session closed"),
}


def action_label(action: str, to_state: str = "") -> StrOrPromise:
    """A readable label for an audit action: from the tables above, else its code in words
    ("foo.bar_baz" -> "Foo: bar baz")."""
    if action == "session.state":
        return SESSION_STATE_LABELS.get(to_state, gettext_lazy("Session state changed"))
    if action in ACTION_LABELS:
        return ACTION_LABELS[action]
    subject, _, verb = action.partition(".")
    words = subject.replace("_", " ").strip().capitalize()
    verb = verb.replace("_", " ").replace(".", " ").strip()
    return f"{words}: {verb}" if verb else words or gettext("Event")
