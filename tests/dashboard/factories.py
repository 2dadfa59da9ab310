"""Plain helpers that create dashboard data; bulk_* variants use bulk_create for volume tests."""

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from evpay.models import AuditEvent, ExceptionRecord, JobRun
from sessions.models import (
    ChargingSession,
    CloseReason,
    DeviceMessage,
    Operation,
    Outcome,
    SessionState,
    Tariff,
    TerminalTransaction,
    TxState,
)
from terminals.models import (
    ClosingBrandTotal,
    Connector,
    PeriodClosing,
    Site,
    Terminal,
    TerminalBrand,
    TerminalStatus,
    TerminalStatusChange,
)

_seq = itertools.count(1)
UTC = ZoneInfo("UTC")


def make_site(
    name=None, *, time_zone="Europe/Amsterdam", currency="EUR", address="Laan 1\nUtrecht"
):
    return Site.objects.create(
        name=name or f"Site {next(_seq)}", time_zone=time_zone, currency=currency, address=address
    )


def make_tariff(site, **fields):
    values = {
        "name": "Standard",
        "price_per_kwh_minor": 40,
        "start_fee_minor": 50,
        "authorise_amount_minor": 5000,
    } | fields
    return Tariff.objects.create(site=site, **values)


def make_terminal(site=None, *, status=TerminalStatus.READY, brands=("VISA", "ECMC"), **fields):
    site = site or make_site()
    n = next(_seq)
    values = {
        "terminal_id": f"T{n:07d}",
        "name": f"IM30 {n}",
        "host": "127.0.0.1",
        "status": status,
        "status_changed_at": timezone.now() - timedelta(hours=1),
    } | fields
    terminal = Terminal.objects.create(site=site, **values)
    for code in brands:
        TerminalBrand.objects.create(terminal=terminal, code=code)
    return terminal


def make_connector(terminal, **fields):
    n = next(_seq)
    values = {"evse_id": f"NL*EVP*E{n}", "label": f"Connector {n}"} | fields
    return Connector.objects.create(terminal=terminal, **values)


def tariff_snapshot(currency="EUR"):
    return {
        "tariff_id": None,
        "name": "Standard",
        "currency": currency,
        "start_fee_minor": 50,
        "price_per_kwh_minor": 40,
        "price_per_minute_minor": 0,
        "idle_fee_per_minute_minor": 0,
        "idle_grace_minutes": 30,
        "vat_rate_bp": 2100,
        "authorise_amount_minor": 5000,
        "max_session_minutes": 720,
        "start_timeout_minutes": 10,
    }


def session_fields(connector, **fields):
    now = timezone.now()
    terminal = connector.terminal
    values = {
        "connector": connector,
        "terminal": terminal,
        "site_id": terminal.site_id,
        "state": SessionState.CLOSED,
        "close_reason": CloseReason.CAPTURED,
        "currency": "EUR",
        "tariff": tariff_snapshot(),
        "requested_at": now - timedelta(hours=2),
        "authorised_at": now - timedelta(hours=2),
        "charging_started_at": now - timedelta(hours=2),
        "charging_ended_at": now - timedelta(hours=1),
        "closed_at": now - timedelta(minutes=50),
        "energy_wh": 10_000,
        "authorised_amount_minor": 5000,
        "cost_start_minor": 50,
        "cost_energy_minor": 400,
        "cost_total_minor": 450,
        "cost_vat_minor": 78,
        "captured_amount_minor": 450,
        "card_brand": "VISA",
        "masked_pan": "4111 **** **** 1234",
        "pan_last4": "1234",
        "card_token": f"tok{next(_seq)}",
    }
    return values | fields


def make_session(connector, **fields):
    return ChargingSession.objects.create(**session_fields(connector, **fields))


def bulk_sessions(connectors, count, **fields):
    """Closed sessions spread over the connectors (closed ones may share a connector)."""
    now = timezone.now()
    rows = []
    for i in range(count):
        connector = connectors[i % len(connectors)]
        extra = {
            "requested_at": now - timedelta(minutes=i + 5),
            "pan_last4": f"{i % 10000:04d}",
            "card_token": f"bulk{i}",
        } | fields
        rows.append(ChargingSession(**session_fields(connector, **extra)))
    return ChargingSession.objects.bulk_create(rows, batch_size=500)


def bulk_terminals(site, count, **fields):
    n = next(_seq)
    rows = [
        Terminal(
            site=site,
            terminal_id=f"B{n:03d}{i:05d}",
            name=f"Bulk {n}-{i}",
            host="127.0.0.1",
            status=TerminalStatus.READY,
            **fields,
        )
        for i in range(count)
    ]
    return Terminal.objects.bulk_create(rows, batch_size=500)


def make_tx(session, operation=Operation.AUTHORISE, **fields):
    now = timezone.now()
    values = {
        "terminal": session.terminal,
        "session": session,
        "operation": operation,
        "workstation_id": "EVPAY1",
        "request_id": str(next(_seq)),
        "amount_minor": 5000,
        "currency": session.currency,
        "state": TxState.COMPLETED,
        "outcome": Outcome.SUCCESS,
        "deadline_at": now + timedelta(minutes=1),
        "completed_at": now,
        "raw_request": '<CardServiceRequest RequestType="CardPayment"/>',
        "raw_response": '<CardServiceResponse OverallResult="Success"/>',
    } | fields
    return TerminalTransaction.objects.create(**values)


def make_receipt(
    tx, lines=("CCV Demo", "VISA **** 1234", "TOTAL EUR 4,50"), seq=1, target="Printer"
):
    """A terminal ticket: the merchant copy ("Printer") unless `target` says otherwise."""
    return DeviceMessage.objects.create(transaction=tx, seq=seq, target=target, lines=list(lines))


def make_exception(
    *,
    severity=ExceptionRecord.Severity.WARNING,
    kind=ExceptionRecord.Kind.OTHER,
    session=None,
    subject=None,
    resolved=False,
    **fields,
):
    n = next(_seq)
    values = {
        "kind": kind,
        "severity": severity,
        "title": f"Problem {n}",
        "what_happened": "Something needs a person.",
        "dedupe_key": f"test:{n}",
        "session_ref": getattr(session, "public_id", None),
        "subject_type": subject._meta.label_lower if subject is not None else "",
        "subject_id": str(subject.pk) if subject is not None else "",
    } | fields
    if resolved:
        values |= {"resolved_at": timezone.now(), "resolution_note": "done"}
    return ExceptionRecord.objects.create(**values)


def make_closing(terminal, *, state=PeriodClosing.State.MATCHED, totals=(), **fields):
    now = timezone.now()
    values = {
        "business_date": timezone.localdate(),
        "period_start": now - timedelta(days=1),
        "period_end": now,
        "state": state,
    } | fields
    closing = PeriodClosing.objects.create(terminal=terminal, **values)
    for total in totals:
        ClosingBrandTotal.objects.create(closing=closing, **({"currency": "EUR"} | total))
    return closing


def flapping_status_history(terminal, count, *, every):
    """`count` status changes of `terminal`, one every `every` back from now, alternating
    between READY and OFFLINE: a long history in one INSERT."""
    now = timezone.now()
    TerminalStatusChange.objects.bulk_create(
        TerminalStatusChange(
            terminal=terminal,
            at=now - every * i,
            from_status=TerminalStatus.READY if i % 2 else TerminalStatus.OFFLINE,
            to_status=TerminalStatus.OFFLINE if i % 2 else TerminalStatus.READY,
        )
        for i in range(1, count + 1)
    )


def make_job_run(kind="status_poll", **fields):
    values = {
        "subject": "T1",
        "outcome": JobRun.Outcome.OK,
        "counts": {"polled": 3},
        "finished_at": timezone.now(),
    } | fields
    return JobRun.objects.create(kind=kind, **values)


def make_audit(session, action="session.started", **fields):
    values = {
        "actor_kind": AuditEvent.ActorKind.SYSTEM,
        "actor_label": "test",
        "subject_type": "charging.chargingsession",
        "subject_id": str(session.pk),
        "session_ref": session.public_id,
        "action": action,
    } | fields
    return AuditEvent.objects.create(**values)


def make_paid_session(site_name="Depot Utrecht"):
    """A settled session at a site with its legal details, its capture and both tickets."""
    site = make_site(site_name, address="Laan 1\n3511 AA Utrecht")
    site.legal_name = "Laadpaal Exploitatie B.V."
    site.legal_address = "Herengracht 100\n1015 BS Amsterdam"
    site.vat_number = "NL123456789B01"
    site.save()
    connector = make_connector(make_terminal(site), evse_id="NL*EVP*E1234")
    session = make_session(
        connector,
        requested_at=datetime(2026, 3, 1, 22, 30, tzinfo=UTC),
        authorised_at=datetime(2026, 3, 1, 22, 30, tzinfo=UTC),
        charging_started_at=datetime(2026, 3, 1, 22, 31, tzinfo=UTC),
        charging_ended_at=datetime(2026, 3, 1, 23, 31, tzinfo=UTC),
        closed_at=datetime(2026, 3, 1, 23, 40, tzinfo=UTC),
        pan_last4="4242",
        masked_pan="4111 **** **** 4242",
    )
    auth = make_tx(session, Operation.AUTHORISE)
    make_receipt(auth, lines=("PRE-AUTH", "EUR 50,00"), target="PrinterReceipt")
    capture = make_tx(session, Operation.CAPTURE, amount_minor=450, original=auth)
    make_receipt(capture, lines=("MERCHANT COPY",), seq=1)
    make_receipt(capture, lines=("CARDHOLDER COPY", "EUR 4,50"), seq=2, target="PrinterReceipt")
    return session
