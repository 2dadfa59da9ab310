"""The charging journey's services, by topic.

- journey: the session state table; start, charge, stop, unplug (what chargers report)
- authorisation: reserving the amount on the card
- stop_by_card: a tap of the card that started the session stops it
- settlement: capture or release
- recovery: the outcome-unknown procedure, and staff resolving a session by hand
- operator: staff actions on a session
- guards: the minute-by-minute guard against hanging starts and lapsing reservations
- incidents: the texts staff read when a person is needed

Each service takes ids or rows plus an explicit `actor`, re-reads what it needs, and is safe
to call twice. Terminal I/O goes through the terminal gateway, outside database transactions.
This package's names are the charging app's public interface.
"""

from sessions.services.authorisation import (
    apply_authorisation,
    authorisation_decided,
    authorise_session,
    delivery_check,
)
from sessions.services.guards import guard_sessions
from sessions.services.journey import (
    ConnectorBusy,
    JourneyError,
    current_cost,
    current_tariff,
    mark_charging_ended,
    mark_charging_started,
    mark_unplugged,
    record_meter,
    request_stop,
    start_session,
)
from sessions.services.operator import (
    operator_capture_now,
    operator_release,
    operator_retry_recovery,
)
from sessions.services.recovery import recover_transaction, resolve_manually
from sessions.services.settlement import apply_settlement, live_settlements, settle_session
from sessions.services.stop_by_card import StopResult, stop_by_card

__all__ = [
    "ConnectorBusy",
    "JourneyError",
    "StopResult",
    "apply_authorisation",
    "apply_settlement",
    "authorisation_decided",
    "authorise_session",
    "current_cost",
    "current_tariff",
    "delivery_check",
    "guard_sessions",
    "live_settlements",
    "mark_charging_ended",
    "mark_charging_started",
    "mark_unplugged",
    "operator_capture_now",
    "operator_release",
    "operator_retry_recovery",
    "record_meter",
    "recover_transaction",
    "request_stop",
    "resolve_manually",
    "settle_session",
    "start_session",
    "stop_by_card",
]
