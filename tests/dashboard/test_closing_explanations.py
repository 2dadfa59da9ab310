"""What a closing mismatch says: each side's totals, and only what is certain about the captures
one side has and the other lacks (the terminal reports totals, never its captures one by one)."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from evpay.audit import Actor
from evpay.models import ExceptionRecord
from sessions.closings import reconcile
from sessions.models import Operation
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db
JOB = Actor.job("test")
MINUTE = timedelta(minutes=1)


@pytest.fixture
def till(db):
    site = f.make_site("Depot")
    terminal = f.make_terminal(site)
    connector = f.make_connector(terminal)
    now = timezone.now()
    closing = f.make_closing(
        terminal, state="pending", period_start=now - timedelta(hours=1), period_end=now + MINUTE
    )

    def capture(amount_minor, **fields):
        # One session each: a capture settles one authorisation, and only one may succeed.
        session = f.make_session(connector)
        auth = f.make_tx(session, Operation.AUTHORISE)
        return f.make_tx(
            session,
            Operation.CAPTURE,
            amount_minor=amount_minor,
            original=auth,
            limit_minor=5000,
            card_brand="VISA",
            **fields,
        )

    return SimpleNamespace(terminal=terminal, closing=closing, capture=capture)


def _explain(till, count, amount_minor):
    totals = []
    if count:
        totals = [
            SimpleNamespace(
                card_circuit="VISA",
                number_payments=count,
                amount=SimpleNamespace(currency="EUR", minor=amount_minor),
            )
        ]
    closing = reconcile(till.closing, totals, JOB)
    row = closing.totals.get(brand="VISA")
    assert not row.matches
    exception = ExceptionRecord.objects.get(kind="closing_mismatch")
    assert row.explanation in exception.what_happened
    return row.explanation


def test_three_of_ours_and_one_unknown_capture_of_theirs_are_all_one_sided(till):
    # The case from issue 16: it read "we recorded 2 capture(s) the terminal did not count".
    a, b, c = till.capture(450), till.capture(500), till.capture(195)
    text = _explain(till, 1, 1234)
    assert text.startswith(
        "VISA: the terminal's totals are 1 capture, €\u00a012.34; we recorded 3 captures, "
        f"€\u00a011.45 (#{a.request_id}, #{b.request_id}, #{c.request_id})."
    )
    assert "None of our 3 captures (€\u00a011.45) is in the terminal's totals." in text
    assert "The terminal's capture (€\u00a012.34) is not in our records." in text
    assert "did not count" not in text and "0.89" not in text  # no net arithmetic


def test_only_ours(till):
    a = till.capture(450)
    text = _explain(till, 0, 0)
    assert "the terminal's totals are 0 captures, €\u00a00.00" in text
    assert f"we recorded 1 capture, €\u00a04.50 (#{a.request_id})" in text
    assert "Our capture (€\u00a04.50) is not in the terminal's totals." in text
    assert "our records" not in text


def test_only_theirs(till):
    text = _explain(till, 2, 900)
    assert "we recorded 0 captures, €\u00a00.00." in text
    assert "None of the terminal's 2 captures (€\u00a09.00) is in our records." in text
    assert "in the terminal's totals." not in text


def test_theirs_has_one_more_than_ours(till):
    till.capture(250)
    text = _explain(till, 2, 1484)
    # Ours may well be among its two; only its extra one is certain.
    assert (
        "At least 1 of the terminal's 2 captures is not in our records; if all of ours are "
        "among them, its other 1 comes to €\u00a012.34."
    ) in text
    assert "of our 1 captures" not in text and "None of" not in text


def test_ours_has_more_and_one_of_ours_has_the_amount_of_its_only_capture(till):
    till.capture(450)
    same = till.capture(1234)
    till.capture(300)
    text = _explain(till, 1, 1234)
    assert (
        "At least 2 of our 3 captures are not in the terminal's totals; its one capture has the "
        f"amount of our #{same.request_id}."
    ) in text
    assert "not in our records" not in text


def test_ours_has_more_but_no_pick_of_ours_makes_its_total(till):
    till.capture(100), till.capture(200), till.capture(400)
    # Two of ours can make 300, 500 or 600, never 1000: one of its two is not ours.
    text = _explain(till, 2, 1000)
    assert "At least 2 of our 3 captures are not in the terminal's totals." in text
    assert "At least 1 of the terminal's 2 captures is not in our records." in text


def test_same_count_different_amounts_means_one_sided_captures_on_both_sides(till):
    till.capture(450), till.capture(500)
    text = _explain(till, 2, 1000)
    assert "we recorded 2 captures, €\u00a09.50" in text
    assert "At least 1 of our 2 captures is not in the terminal's totals." in text
    assert "At least 1 of the terminal's 2 captures is not in our records." in text
    assert "different amount" in text


def test_captures_in_doubt_are_named_with_their_amount(till):
    till.capture(450)
    doubtful = till.capture(700, outcome="unknown", state="unknown")
    text = _explain(till, 2, 1150)
    assert (
        f"Captures in doubt that may explain it: #{doubtful.request_id} (unknown, €\u00a07.00)."
    ) in text


def test_ours_has_more_and_two_of_ours_could_make_its_total(till):
    till.capture(100), till.capture(200), till.capture(400)
    text = _explain(till, 2, 600)
    assert (
        "At least 1 of our 3 captures is not in the terminal's totals; if all 2 of the "
        "terminal's are among ours, our other 1 comes to €\u00a01.00."
    ) in text
    assert "not in our records" not in text
