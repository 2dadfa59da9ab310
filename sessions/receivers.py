"""What the charging app does when the fleet reports an event (terminals.signals)."""

from __future__ import annotations

from sessions.closings import reconcile
from sessions.models import OPEN_STATES, ChargingSession
from sessions.services.incidents import Kind, raise_incident


def raise_offline_exception(sender, *, terminal, actor, **_kwargs) -> None:
    """A terminal went offline: staff must know if sessions are open on it."""
    open_sessions = ChargingSession.objects.filter(terminal=terminal, state__in=OPEN_STATES).count()
    if not open_sessions:
        return
    raise_incident(
        Kind.TERMINAL_OFFLINE,
        dedupe_key=f"offline:{terminal.pk}",
        subject=terminal,
        terminal_ref=terminal.terminal_id,
        data={"open_sessions": open_sessions},
        actor=actor,
        terminal_name=terminal.name,
        open_sessions=open_sessions,
        terminal_id=terminal.terminal_id,
        failures=terminal.consecutive_failures,
    )


def reconcile_closing(sender, *, closing, totals, actor, **_kwargs) -> None:
    reconcile(closing, totals, actor)
