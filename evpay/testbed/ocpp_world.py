"""The database side of simulating OCPP chargers (the simulator itself has no Django): which
session a cable-in started, and the demo's connectors with their chargers."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import DatabaseError, connection

from evpay.testbed.simulator import Connector
from sessions.models import ChargingSession
from terminals.models import ChargePoint, OcppVersion
from terminals.models import Connector as ConnectorModel


def link_connector(connector: ConnectorModel, charge_point: ChargePoint, number: int, version):
    """Make `connector` the charger's connector `number`: 1.6 numbers connectors
    (connectorId), 2.0.1 numbers EVSEs (evseId; one connector each, numbered 1)."""
    connector.charge_point = charge_point
    if version == OcppVersion.V201:
        connector.ocpp_evse_id, connector.ocpp_connector_id = number, 1
    else:
        connector.ocpp_evse_id, connector.ocpp_connector_id = None, number
    connector.full_clean()
    connector.save(update_fields=["charge_point", "ocpp_evse_id", "ocpp_connector_id"])


def session_started_on(evse_id: str, since: float) -> str | None:
    """The public id of the newest session on this connector requested after `since` (epoch
    seconds): what a cable-in at an OCPP charger started, or None yet. A real charger is never
    told; the simulated driver needs it to follow its session through the API."""
    try:
        public_id = (
            ChargingSession.objects.filter(
                connector__evse_id=evse_id, requested_at__gte=datetime.fromtimestamp(since, UTC)
            )
            .order_by("-requested_at")
            .values_list("public_id", flat=True)
            .first()
        )
    except DatabaseError:
        # This thread's connection died (the soak terminates backends; a database restart):
        # Django does not reconnect a connection outside a request by itself. The next poll
        # gets a new one.
        connection.close()
        return None
    return str(public_id) if public_id else None


def simulated_connectors(sites: set[str], chargers: dict[str, dict]) -> list[Connector]:
    """Enabled connectors of these sites; an OCPP charger's ones are played over OCPP when its
    password is in `chargers`, and a charger marked reserved (and every connector of its
    terminal: the simulated drivers must not tap there) is left alone."""
    rows = (
        ConnectorModel.objects.select_related("terminal__site", "charge_point")
        .filter(enabled=True, terminal__site__name__in=sites)
        .order_by("evse_id")
    )
    reserved_terminals = {
        row.terminal_id
        for row in rows
        if row.charge_point and chargers.get(row.charge_point.identity, {}).get("reserved")
    }
    connectors = []
    for row in rows:
        if row.terminal_id in reserved_terminals:
            continue
        charger_id, number = "", 0
        if row.charge_point is not None:
            if row.charge_point.identity not in chargers:
                continue  # an OCPP charger we cannot play: someone else's
            charger_id = row.charge_point.identity
            number = row.ocpp_evse_id or row.ocpp_connector_id
        connectors.append(
            Connector(
                row.evse_id,
                row.terminal.terminal_id,
                row.terminal.site.name,
                charger_id=charger_id,
                ocpp_connector=number,
            )
        )
    return connectors
