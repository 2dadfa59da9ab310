"""Raising and resolving exceptions (things that need a person)."""

from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from evpay import audit
from evpay.models import ExceptionRecord
from evpay.pan import mask_pans


def raise_exception(
    *,
    kind: str,
    severity: int,
    title: str,
    what_happened: str,
    suggested_actions: str = "",
    dedupe_key: str,
    subject=None,
    session=None,
    terminal_ref: str = "",
    data: dict | None = None,
    actor=None,
) -> ExceptionRecord:
    """Open an exception, or update the open one with the same key (safe to call repeatedly)."""
    fields = {
        "kind": kind,
        "severity": severity,
        "title": title[:200],
        "what_happened": what_happened,
        "suggested_actions": suggested_actions,
        "subject_type": subject._meta.label_lower if subject is not None else "",
        "subject_id": str(subject.pk) if subject is not None else "",
        "session_ref": getattr(session, "public_id", None),
        "terminal_ref": terminal_ref,
        "data": data or {},
    }
    existing = ExceptionRecord.objects.filter(dedupe_key=dedupe_key, resolved_at__isnull=True)
    if existing.update(**fields):
        return existing.get()
    try:
        with transaction.atomic():
            record = ExceptionRecord.objects.create(dedupe_key=dedupe_key, **fields)
    except IntegrityError:  # raised concurrently by another process: theirs stands
        return ExceptionRecord.objects.get(dedupe_key=dedupe_key, resolved_at__isnull=True)
    audit.record(
        actor or audit.Actor.system(),
        record,
        "exception.raised",
        to_state="open",
        reason=title,
        session=session,
    )
    return record


def resolve_exception(record: ExceptionRecord, user, note: str) -> bool:
    """Mark resolved; returns False if it was already resolved (safe to call twice)."""
    note = mask_pans(note.strip())  # staff paste card numbers from the acquirer portal
    if not note:
        raise ValueError("a resolution note is required")
    done = ExceptionRecord.objects.filter(pk=record.pk, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolved_by=user, resolution_note=note
    )
    if done:
        audit.record(
            audit.Actor.user(user),
            record,
            "exception.resolved",
            from_state="open",
            to_state="resolved",
            reason=note,
        )
    return bool(done)


def resolve_automatically(dedupe_key: str, note: str, actor, session=None) -> int:
    """Close the open exception raised under `dedupe_key` when the system itself cleared the
    cause (recovery proved the outcome, a terminal answered again), with its audit row.
    Returns rows closed; the conditional update lets only one of two racing callers audit."""
    records = ExceptionRecord.objects.filter(dedupe_key=dedupe_key)
    return _resolve_open(records, note, actor, session=session)


def resolve_for_session(session, note: str, actor, *, user=None, dedupe_keys=()) -> int:
    """Close every open exception of `session`: those shown on its page (`session_ref`) and
    those whose dedupe key names it (`dedupe_keys`, e.g. "settle:<pk>"), each with its audit
    row. For staff resolving the session by hand: `user` is recorded as the resolver."""
    records = ExceptionRecord.objects.filter(
        Q(session_ref=session.public_id) | Q(dedupe_key__in=list(dedupe_keys))
    )
    return _resolve_open(records, note, actor, session=session, user=user)


def _resolve_open(records, note: str, actor, *, session=None, user=None) -> int:
    note = mask_pans(note)
    closed = 0
    for record in records.filter(resolved_at__isnull=True):
        if ExceptionRecord.objects.filter(pk=record.pk, resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolved_by=user, resolution_note=note
        ):
            audit.record(
                actor,
                record,
                "exception.resolved",
                from_state="open",
                to_state="resolved",
                reason=note,
                session=session,
            )
            closed += 1
    return closed


# subject type (model label) -> what "retry" means for an exception about such a row. Apps
# register their handlers at start-up, so this base module imports no app.
_retry_handlers: dict[str, Callable[[ExceptionRecord], None]] = {}


def register_retry(subject_type: str, handler: Callable[[ExceptionRecord], None]) -> None:
    """Let staff retry exceptions about `subject_type` rows; `handler` runs after commit."""
    _retry_handlers[subject_type] = handler


def retry_exception(record: ExceptionRecord, user) -> bool:
    """Queue the retry registered for the exception's subject (recovery, for a terminal
    transaction); False if there is none or the exception is resolved."""
    handler = _retry_handlers.get(record.subject_type)
    if handler is None or not record.is_open:
        return False
    audit.record(audit.Actor.user(user), record, "exception.retry", reason="retry recovery")
    handler(record)
    return True
