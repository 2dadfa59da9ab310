"""What a charger's OCPP reports do to its sessions: the journey services, called with what
the charger said (sessions.services.journey keeps the state table; nothing is decided twice).

Synchronous (Django ORM): the OCPP server calls these in a thread. Each takes the charger's
row and the raw (camelCase, already schema-validated) payload and returns the answer's fields
(snake_case, for the `ocpp` package's call_result classes). What was not applied as reported
is said in `report.note` and stored with the message.

Replays: a charger replays what it queued while offline, possibly twice, late, or after a
reconnect to another server process. A report is applied at most once (OcppMessage.dedupe_key:
1.6 StopTransaction by transaction id, 2.0.1 TransactionEvent by transaction id + seqNo, 1.6
MeterValues by transaction id + timestamp); a reading older than the last applied one is
stale and ignored, as is anything about a transaction that has ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.utils import timezone

from evpay.audit import Actor
from evpay.validation import clock_skew, parse_bounded_datetime
from sessions.journal import clean_text
from sessions.models import OPEN_STATES, ChargingSession, OcppMessage, SessionState
from sessions.services import (
    JourneyError,
    mark_charging_ended,
    mark_charging_started,
    mark_unplugged,
    record_meter,
    start_session,
)
from sessions.services.incidents import Kind, raise_incident, short_id
from terminals.models import ChargePoint, Connector, OcppVersion

log = logging.getLogger(__name__)
S = SessionState

# The most a meter register may read (1 TWh): a larger number is a broken meter, not energy.
MAX_REGISTER_WH = 10**12
HEARTBEAT_INTERVAL = 300
# What charging a session means to a charger: our token may be used.
CHARGEABLE = (S.AUTHORISED, S.CHARGING)


class ReportRefused(ValueError):
    """A value the schema lets through but we cannot take (a date that is not a date)."""


@dataclass
class Report:
    """One incoming call: who sent it, what it says, and what we made of it."""

    charge_point: ChargePoint
    action: str
    payload: dict
    message_id: str
    received_at: datetime = field(default_factory=timezone.now)
    session: ChargingSession | None = None
    note: str = ""
    dedupe_key: str = ""
    # The message row first_report wrote for this report (the server completes it).
    row_pk: int | None = None

    @property
    def actor(self) -> Actor:
        return Actor.charger(f"ocpp:{self.charge_point.identity}")

    def noted(self, text: str) -> None:
        self.note = (f"{self.note}; {text}" if self.note else text)[:300]


# --------------------------------------------------------------------------- shared helpers


def moment(value, *, what="timestamp") -> datetime:
    at = parse_bounded_datetime(value)
    if at is None:
        raise ReportRefused(f"{what} {str(value)[:40]!r} is not a date-time")
    return at


def bounded_moment(report: Report, value, not_before: datetime | None) -> datetime:
    """The charger's moment, bounded by ours: never later than now (plus the allowed clock
    skew, then clamped to now) and never before the step it follows."""
    at = moment(value)
    now = timezone.now()
    if at > now + clock_skew():
        report.noted(f"timestamp {at.isoformat()} is in the future: taken as now")
        at = now
    at = min(at, now)
    if not_before is not None and at < not_before:
        at = not_before
    return at


def energy_register_wh(meter_values: list, version: str) -> tuple[int, datetime] | None:
    """The newest Energy.Active.Import.Register reading (Wh) in a list of MeterValue, with
    its timestamp; None when there is none."""
    best = None
    for meter_value in meter_values or []:
        at = moment(meter_value.get("timestamp"))
        for sample in meter_value.get("sampledValue") or []:
            if sample.get("measurand", "Energy.Active.Import.Register") != (
                "Energy.Active.Import.Register"
            ):
                continue
            if sample.get("phase"):  # a per-phase part, not the total
                continue
            wh = _wh(sample, version)
            if best is None or at > best[1]:
                best = (wh, at)
    return best


def _wh(sample: dict, version: str) -> int:
    try:
        value = Decimal(str(sample.get("value")))
    except InvalidOperation:
        raise ReportRefused(
            f"meter value {str(sample.get('value'))[:20]!r} is not a number"
        ) from None
    if not value.is_finite():
        raise ReportRefused("meter value is not a finite number")
    if version == OcppVersion.V16:
        unit, multiplier = sample.get("unit", "Wh"), 0
    else:
        unit_of_measure = sample.get("unitOfMeasure") or {}
        unit, multiplier = unit_of_measure.get("unit", "Wh"), unit_of_measure.get("multiplier", 0)
    if not isinstance(multiplier, int) or not -3 <= multiplier <= 6:
        raise ReportRefused(f"unit multiplier {multiplier!r} out of range")
    if unit == "kWh":
        value *= 1000
    elif unit != "Wh":
        raise ReportRefused(f"energy in {str(unit)[:10]!r}: only Wh and kWh are understood")
    value = value.scaleb(multiplier)
    if not 0 <= value <= MAX_REGISTER_WH:
        raise ReportRefused(f"energy register {value} Wh out of range")
    return int(value)


def register(value: int, what: str) -> int:
    if not 0 <= value <= MAX_REGISTER_WH:
        raise ReportRefused(f"{what} {value} Wh out of range")
    return value


def storable(value, depth: int = 0):
    """A payload as it may be stored and shown: no NUL (PostgreSQL refuses it in JSON), card
    numbers masked wherever a charger put one."""
    if depth > 20:
        return "…"
    if isinstance(value, dict):
        return {clean_text(str(k), 100): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v, depth + 1) for v in value]
    if isinstance(value, str):
        return clean_text(value, 2000)
    return value


def first_report(report: Report, key: str) -> bool:
    """Claim `key` for this report; False when an earlier copy of it already took it. The
    message row carrying the key is written here, in the caller's transaction: the claim and
    what it applies commit together."""
    report.dedupe_key = key
    try:
        with transaction.atomic():
            row = OcppMessage.objects.create(
                charge_point=report.charge_point,
                direction=OcppMessage.Direction.IN,
                kind=OcppMessage.Kind.CALL,
                action=report.action,
                message_id=report.message_id[:64],
                payload=storable(report.payload),
                at=report.received_at,
                dedupe_key=key,
            )
        report.row_pk = row.pk
    except IntegrityError:
        report.dedupe_key = ""
        report.noted("a copy of this report was applied before: answered, not applied again")
        return False
    return True


def connector_for(report: Report, number: int | None) -> Connector | None:
    """1.6: the connector with this connectorId; 2.0.1: the connector on this evseId."""
    if number is None:
        return None
    rows = Connector.objects.select_related("terminal__site").filter(
        charge_point=report.charge_point
    )
    if report.charge_point.ocpp_version == OcppVersion.V201:
        connector = rows.filter(ocpp_evse_id=number).first()
    else:
        connector = rows.filter(ocpp_connector_id=number, ocpp_evse_id__isnull=True).first()
    if connector is None:
        report.noted(f"no connector {number} is configured for this charger")
    return connector


def open_session(connector: Connector) -> ChargingSession | None:
    return (
        ChargingSession.objects.filter(connector=connector, state__in=OPEN_STATES)
        .select_related("connector", "terminal")
        .first()
    )


def session_for_tag(report: Report, id_tag: str | None) -> ChargingSession | None:
    if not id_tag:
        return None
    return (
        ChargingSession.objects.filter(
            ocpp_id_tag=id_tag, connector__charge_point=report.charge_point
        )
        .select_related("connector", "terminal")
        .first()
    )


def session_for_transaction(report: Report, transaction_id) -> ChargingSession | None:
    if transaction_id in (None, ""):
        return None
    return (
        ChargingSession.objects.filter(
            ocpp_transaction_id=str(transaction_id), connector__charge_point=report.charge_point
        )
        .select_related("connector", "terminal")
        .first()
    )


def tag_status(session: ChargingSession | None) -> str:
    """idTagInfo / idTokenInfo: Accepted only for the tag of a session that may charge."""
    return "Accepted" if session is not None and session.state in CHARGEABLE else "Invalid"


def token_status(session, token, transaction_id) -> str:
    """A TransactionEvent's idTokenInfo: the session's own token is still Accepted on the
    events of the transaction it ran (a stop, a replayed end), never on a session that did
    not charge."""
    if session is None or session.ocpp_id_tag != token:
        return "Invalid"
    ran = session.ocpp_transaction_id == transaction_id and session.state in (S.STOPPING, S.ENDED)
    return "Accepted" if session.state in CHARGEABLE or ran else "Invalid"


def charger_problem(report: Report, session, problem: str, key: str) -> None:
    """A report we cannot apply as it says, about money: staff see it in the exception queue
    (once per `key`: a replay of the same report refreshes the same exception)."""
    report.noted(problem)
    terminal = session.terminal if session is not None else None
    raise_incident(
        Kind.CHARGER_REPORT,
        dedupe_key=f"ocpp:{report.charge_point.pk}:{key}"[:120],
        subject=session or report.charge_point,
        session=session,
        terminal_ref=terminal.terminal_id if terminal else "",
        data={"charge_point": report.charge_point.identity, "payload": report.payload},
        actor=report.actor,
        charge_point=report.charge_point.identity,
        action=report.action,
        problem=problem,
        session_id=short_id(session) if session is not None else "none",
    )


# --------------------------------------------------------------------------- the journey


def cable_in(report: Report, connector: Connector) -> None:
    """Cable plugged in (1.6 Preparing, 2.0.1 Occupied): start a session; the terminal asks
    for the card as for any start."""
    if open_session(connector) is not None:
        return
    try:
        report.session = start_session(connector, report.actor)
    except JourneyError as exc:
        report.noted(f"no session started: {exc}")


def cable_out(report: Report, connector: Connector, at: datetime) -> None:
    """Cable out (Available): charging is over, idle time ends, the session is settled."""
    session = open_session(connector)
    if session is None:
        return
    report.session = session
    if session.state == S.AUTHORISING:
        report.noted("cable out while the card is being authorised: the authorisation decides")
        return
    try:
        not_before = session.charging_ended_at or session.meter_updated_at or session.requested_at
        mark_unplugged(session, report.actor, at=max(at, not_before))
    except JourneyError as exc:
        report.noted(str(exc))


def apply_status(report: Report, connector: Connector | None, status: str, at) -> None:
    if connector is None:
        return
    # A charger clock ahead of ours must not make every later status look older than this.
    at = min(at, timezone.now())
    if connector.ocpp_status_at is not None and at < connector.ocpp_status_at:
        report.noted("older than the last status reported: not applied")
        return
    Connector.objects.filter(pk=connector.pk).update(ocpp_status=status[:20], ocpp_status_at=at)
    plugged = "Preparing" if report.charge_point.ocpp_version == OcppVersion.V16 else "Occupied"
    if status == plugged:
        cable_in(report, connector)
    elif status == "Available":
        cable_out(report, connector, at)


def apply_reading(report: Report, session: ChargingSession, reading) -> None:
    """A meter register reading during the transaction: the running cost, the cost cap."""
    if reading is None:
        return
    register_wh, at = reading
    if session.state not in (S.CHARGING, S.STOPPING):
        report.noted(f"meter values after the stop (session is {session.state}): ignored")
        return
    if session.ocpp_meter_start_wh is None:
        ChargingSession.objects.filter(pk=session.pk).update(ocpp_meter_start_wh=register_wh)
        session.ocpp_meter_start_wh = register_wh
    if session.meter_updated_at is not None and at <= session.meter_updated_at:
        report.noted("reading not newer than the last one applied: ignored")
        return
    energy = register_wh - session.ocpp_meter_start_wh
    if energy < 0:
        report.noted(f"register {register_wh} Wh below the transaction's start: ignored")
        return
    at = bounded_moment(report, at.isoformat(), session.charging_started_at)
    try:
        record_meter(session, energy, report.actor, at=at)
    except JourneyError as exc:
        report.noted(f"ignored: {exc}")


def end_transaction(report: Report, session: ChargingSession, final_register, at) -> None:
    """The charger ended the transaction: price what is provable, never a negative amount."""
    if session.state not in (S.CHARGING, S.STOPPING, S.AUTHORISED):
        report.noted(f"the transaction had already ended (session is {session.state})")
        return
    energy = None
    if final_register is not None and session.ocpp_meter_start_wh is not None:
        final = final_register - session.ocpp_meter_start_wh
        if final < 0:
            charger_problem(
                report,
                session,
                f"meter at the stop ({final_register} Wh) is below the meter at the start "
                f"({session.ocpp_meter_start_wh} Wh); priced on the last reading "
                f"({session.energy_wh} Wh)",
                f"stop-meter:{session.pk}",
            )
        elif final < session.energy_wh:
            charger_problem(
                report,
                session,
                f"energy at the stop ({final} Wh) is below an earlier reading "
                f"({session.energy_wh} Wh); priced on that reading",
                f"stop-meter:{session.pk}",
            )
        else:
            energy = final
    at = bounded_moment(report, at, session.meter_updated_at or session.charging_started_at)
    mark_charging_ended(session, energy, report.actor, at=at)


# --------------------------------------------------------------------------- both versions


def boot_notification(report: Report, version: str) -> dict:
    payload = report.payload
    station = payload.get("chargingStation", payload)  # 2.0.1 nests it
    fields = {
        "ocpp_version": version,
        "vendor": (station.get("chargePointVendor") or station.get("vendorName") or "")[:50],
        "model": (station.get("chargePointModel") or station.get("model") or "")[:50],
        "serial_number": (
            station.get("chargePointSerialNumber") or station.get("serialNumber") or ""
        )[:50],
        "firmware_version": (station.get("firmwareVersion") or "")[:50],
        "booted_at": report.received_at,
    }
    ChargePoint.objects.filter(pk=report.charge_point.pk).update(**fields)
    # A reboot mid-session changes nothing by itself: what the charger reports next (its
    # status, a replayed StopTransaction) decides what happens to the session.
    open_count = ChargingSession.objects.filter(
        connector__charge_point=report.charge_point, state__in=OPEN_STATES
    ).count()
    if open_count:
        report.noted(f"rebooted with {open_count} open session(s): they continue")
    return {
        "current_time": report.received_at.isoformat(),
        "interval": HEARTBEAT_INTERVAL,
        "status": "Accepted",
    }


def heartbeat(report: Report) -> dict:
    return {"current_time": timezone.now().isoformat()}


# --------------------------------------------------------------------------- OCPP 1.6


def status_notification_16(report: Report) -> dict:
    payload = report.payload
    at = moment(payload["timestamp"]) if payload.get("timestamp") else report.received_at
    if payload["connectorId"] == 0:
        return {}  # the charger as a whole: nothing to do for a session
    connector = connector_for(report, payload["connectorId"])
    apply_status(report, connector, payload["status"], at)
    return {}


def authorize_16(report: Report) -> dict:
    report.session = session_for_tag(report, report.payload["idTag"])
    return {"id_tag_info": {"status": tag_status(report.session)}}


def start_transaction_16(report: Report) -> dict:
    payload = report.payload
    register(payload["meterStart"], "meterStart")
    moment(payload["timestamp"])
    session = report.session = session_for_tag(report, payload["idTag"])
    if session is None:
        report.noted("idTag issued by nobody here: refused")
        # transactionId is required in the answer; 0 names no transaction of ours.
        return {"transaction_id": 0, "id_tag_info": {"status": "Invalid"}}
    connector = session.connector
    if connector.ocpp_connector_id != payload["connectorId"]:
        report.noted(f"idTag belongs to connector {connector.ocpp_connector_id}: refused")
        return {"transaction_id": 0, "id_tag_info": {"status": "Invalid"}}
    # Our transaction id is the session's key: a replayed StartTransaction (the charger did
    # not get our answer) gets the same one.
    transaction_id = session.pk
    with transaction.atomic():
        bound = ChargingSession.objects.filter(pk=session.pk, ocpp_transaction_id="").update(
            ocpp_transaction_id=str(transaction_id), ocpp_meter_start_wh=payload["meterStart"]
        )
        session.refresh_from_db()
        if not bound:
            report.noted("a replay of a StartTransaction already applied")
        elif session.state == S.AUTHORISED:
            at = bounded_moment(report, payload["timestamp"], session.authorised_at)
            mark_charging_started(session, report.actor, at=at)
        else:
            report.noted(f"the session is {session.state}: charging refused")
    return {"transaction_id": transaction_id, "id_tag_info": {"status": tag_status(session)}}


def meter_values_16(report: Report) -> dict:
    payload = report.payload
    transaction_id = payload.get("transactionId")
    if transaction_id is None:
        report.noted("not about a transaction: not applied")
        return {}
    session = report.session = session_for_transaction(report, transaction_id)
    if session is None:
        report.noted(f"transaction {transaction_id} is not known here: ignored")
        return {}
    reading = energy_register_wh(payload["meterValue"], OcppVersion.V16)
    if reading is None:
        return {}
    with transaction.atomic():
        if first_report(report, f"meter:{transaction_id}:{reading[1].isoformat()}"):
            session = ChargingSession.objects.select_for_update().get(pk=session.pk)
            apply_reading(report, session, reading)
    return {}


def stop_transaction_16(report: Report) -> dict:
    payload = report.payload
    transaction_id = payload["transactionId"]
    register(payload["meterStop"], "meterStop")
    moment(payload["timestamp"])
    session = report.session = session_for_transaction(report, transaction_id)
    answer = {"id_tag_info": {"status": "Accepted"}} if payload.get("idTag") else {}
    if session is None:
        charger_problem(
            report,
            None,
            f"StopTransaction for transaction {transaction_id}, which this charger never "
            f"started here (meter {payload['meterStop']} Wh): nothing to charge",
            f"unknown-transaction:{transaction_id}",
        )
        return answer
    with transaction.atomic():
        if not first_report(report, f"stop:{transaction_id}"):
            return answer
        session = ChargingSession.objects.select_for_update().get(pk=session.pk)
        readings = [
            energy_register_wh([meter_value], OcppVersion.V16)
            for meter_value in payload.get("transactionData") or []
        ]
        for reading in sorted(filter(None, readings), key=lambda r: r[1]):
            apply_reading(report, session, reading)
        end_transaction(report, session, payload["meterStop"], payload["timestamp"])
    return answer


def data_transfer_16(report: Report) -> dict:
    report.noted("vendor data is not used")
    return {"status": "UnknownVendorId"}


# --------------------------------------------------------------------------- OCPP 2.0.1


def status_notification_201(report: Report) -> dict:
    payload = report.payload
    connector = connector_for(report, payload["evseId"])
    apply_status(report, connector, payload["connectorStatus"], moment(payload["timestamp"]))
    return {}


def authorize_201(report: Report) -> dict:
    report.session = session_for_tag(report, report.payload["idToken"]["idToken"])
    return {"id_token_info": {"status": tag_status(report.session)}}


def transaction_event_201(report: Report) -> dict:
    payload = report.payload
    info = payload["transactionInfo"]
    transaction_id = info["transactionId"]
    moment(payload["timestamp"])
    token = (payload.get("idToken") or {}).get("idToken")
    session = session_for_transaction(report, transaction_id)
    if session is None and token:
        session = session_for_tag(report, token)
    report.session = session
    answer = {"id_token_info": {"status": token_status(session, token, transaction_id)}}
    answer = answer if token else {}
    event = payload["eventType"]
    if session is None:
        connector = connector_for(report, (payload.get("evse") or {}).get("id"))
        if event == "Ended":
            charger_problem(
                report,
                None,
                f"TransactionEvent Ended for transaction {transaction_id}, which this charger "
                "never started here: nothing to charge",
                f"unknown-transaction:{transaction_id}",
            )
        elif event == "Started" and connector is not None:
            cable_in(report, connector)  # 2.0.1 may open a transaction on plug-in
        else:
            report.noted(f"transaction {transaction_id} belongs to no session yet")
        return answer
    with transaction.atomic():
        if not first_report(report, f"tx:{transaction_id}:{payload['seqNo']}"):
            return answer
        session = ChargingSession.objects.select_for_update().get(pk=session.pk)
        evse = (payload.get("evse") or {}).get("id")
        if evse is not None and evse != session.connector.ocpp_evse_id:
            report.noted(f"the token belongs to EVSE {session.connector.ocpp_evse_id}, not {evse}")
            return {"id_token_info": {"status": "Invalid"}} if token else {}
        if session.ocpp_transaction_id and session.ocpp_transaction_id != transaction_id:
            report.noted(f"the session belongs to transaction {session.ocpp_transaction_id}")
            return {"id_token_info": {"status": "Invalid"}} if token else {}
        reading = energy_register_wh(payload.get("meterValue") or [], OcppVersion.V201)
        if not session.ocpp_transaction_id:
            # The charger has used our token on this transaction: it is the session's.
            ChargingSession.objects.filter(pk=session.pk).update(
                ocpp_transaction_id=transaction_id,
                ocpp_meter_start_wh=reading[0] if reading else None,
            )
            session.ocpp_transaction_id = transaction_id
            session.ocpp_meter_start_wh = reading[0] if reading else None
            if session.state == S.AUTHORISED:
                at = bounded_moment(report, payload["timestamp"], session.authorised_at)
                mark_charging_started(session, report.actor, at=at)
            elif session.state not in CHARGEABLE:
                report.noted(f"the session is {session.state}: charging refused")
        if event == "Ended":
            end_transaction(report, session, reading[0] if reading else None, payload["timestamp"])
        else:
            apply_reading(report, session, reading)
    return answer


def meter_values_201(report: Report) -> dict:
    report.noted("2.0.1 MeterValues are outside a transaction: not applied")
    return {}


def acknowledge(report: Report) -> dict:
    """Notifications we store but do not act on (events, security events, firmware)."""
    return {}


HANDLERS = {
    OcppVersion.V16: {
        "BootNotification": lambda r: boot_notification(r, OcppVersion.V16),
        "Heartbeat": heartbeat,
        "StatusNotification": status_notification_16,
        "Authorize": authorize_16,
        "StartTransaction": start_transaction_16,
        "MeterValues": meter_values_16,
        "StopTransaction": stop_transaction_16,
        "DataTransfer": data_transfer_16,
        "FirmwareStatusNotification": acknowledge,
        "DiagnosticsStatusNotification": acknowledge,
    },
    OcppVersion.V201: {
        "BootNotification": lambda r: boot_notification(r, OcppVersion.V201),
        "Heartbeat": heartbeat,
        "StatusNotification": status_notification_201,
        "Authorize": authorize_201,
        "TransactionEvent": transaction_event_201,
        "MeterValues": meter_values_201,
        "NotifyEvent": acknowledge,
        "SecurityEventNotification": acknowledge,
        "FirmwareStatusNotification": acknowledge,
        "NotifyReport": acknowledge,
    },
}
