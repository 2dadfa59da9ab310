"""One audit trail for sessions, payments, terminals and operator actions."""

from __future__ import annotations

from dataclasses import dataclass

from evpay.models import AuditEvent
from evpay.pan import mask_pans


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
    """Write one audit row. `session` groups rows on the session's timeline."""
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
