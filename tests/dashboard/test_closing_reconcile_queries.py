"""Reconciling a closing costs the same number of queries whatever the number of captures
(issue #19: one terminal-day of 100,000 captures, benchmarks/reconciliation.py)."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evpay.audit import Actor
from sessions.closings import reconcile
from sessions.models import Operation, Outcome, TerminalTransaction, TxState
from terminals.models import PeriodClosing
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db
JOB = Actor.job("test")
BRANDS = ("VISA", "ECMC")


def _day(count):
    """A terminal with ``count`` successful captures over two brands, and their closing."""
    terminal = f.make_terminal(f.make_site())
    now = timezone.now()

    def rows(operation, **fields):
        return [
            TerminalTransaction(
                terminal=terminal,
                operation=operation,
                workstation_id="EVPAY1",
                currency="EUR",
                state=TxState.COMPLETED,
                outcome=Outcome.SUCCESS,
                created_at=now - timedelta(minutes=1),
                deadline_at=now + timedelta(minutes=1),
                card_brand=BRANDS[i % len(BRANDS)],
                **{k: v(i) for k, v in fields.items()},
            )
            for i in range(count)
        ]

    auths = TerminalTransaction.objects.bulk_create(
        rows(Operation.AUTHORISE, request_id=lambda i: f"A{i}")
    )
    TerminalTransaction.objects.bulk_create(
        rows(
            Operation.CAPTURE,
            request_id=lambda i: f"C{i}",
            amount_minor=lambda i: 100 + i,
            limit_minor=lambda i: 5000,
            original=lambda i: auths[i],
        )
    )
    closing = f.make_closing(
        terminal,
        state=PeriodClosing.State.PENDING,
        period_start=now - timedelta(hours=1),
        period_end=now,
    )
    captures = TerminalTransaction.objects.filter(terminal=terminal, operation=Operation.CAPTURE)
    return closing, captures


def _totals(captures, short_by=0):
    totals = []
    for brand in BRANDS:
        mine = captures.filter(card_brand=brand)
        amount = sum(mine.values_list("amount_minor", flat=True))
        short = short_by if brand == BRANDS[0] else 0
        totals.append(
            SimpleNamespace(
                card_circuit=brand,
                number_payments=mine.count() - short,
                amount=SimpleNamespace(currency="EUR", minor=amount - 150 * short),
            )
        )
    return totals


def _queries(count, short_by):
    closing, captures = _day(count)
    totals = _totals(captures, short_by)
    with CaptureQueriesContext(connection) as queries:
        reconcile(closing, totals, JOB)
    closing.refresh_from_db()
    return len(queries), closing


@pytest.mark.parametrize("short_by", [0, 1], ids=["matching", "one-brand-short"])
def test_reconcile_runs_as_many_queries_for_200_captures_as_for_10(short_by):
    few, few_closing = _queries(10, short_by)
    many, many_closing = _queries(200, short_by)
    assert few == many
    expected = PeriodClosing.State.MISMATCH if short_by else PeriodClosing.State.MATCHED
    assert few_closing.state == many_closing.state == expected
    # The drill-down still lists every capture counted on our side.
    visa = many_closing.totals.get(brand="VISA")
    assert len(visa.transaction_ids) == visa.our_count == 100
    if short_by:
        assert visa.explanation.startswith("VISA: the terminal's totals are 99 captures")
