"""A session settled by the emulator over real sockets, then found by its driver: the receipt
shows the terminal's cardholder copy of the capture and what was really captured."""

import pytest
from django.urls import reverse
from django.utils import timezone

from evpay.money import format_money
from evpay.templatetags.evpay_tags import site_localtime
from sessions import receipts, services
from sessions.models import CloseReason, SessionState
from tests.charging.conftest import CHARGER, make_world, settling_session

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_settled_session_has_the_cardholder_copy_of_the_capture_on_its_receipt(
    client, emulator, emu_terminal
):
    _terminal, connectors, _tariff = make_world(emu_terminal)
    session = settling_session(emulator, emu_terminal, connectors[0], energy_wh=7_500)
    services.settle_session(session.pk, CHARGER)
    session.refresh_from_db()
    assert (session.state, session.close_reason) == (SessionState.CLOSED, CloseReason.CAPTURED)

    html = client.get(reverse("receipts:public", args=[receipts.receipt_token(session)]))
    html = html.content.decode()
    assert "CARDHOLDER COPY" in html and "PAYMENT (CAPTURE)" in html
    # The merchant copy and the pre-authorisation ticket arrived too, but are not the driver's.
    assert "MERCHANT COPY" not in html and "PRE-AUTHORISATION" not in html
    assert format_money(session.captured_amount_minor, "EUR") in html
    assert session.masked_pan and session.masked_pan in html
    assert "7.500 kWh" in html

    # And the same receipt by the lookup, with what the driver knows.
    local_day = site_localtime(session.requested_at or timezone.now(), session.site).date()
    amount = f"{session.captured_amount_minor / 100:.2f}"
    response = client.post(
        reverse("receipts:lookup"),
        {
            "site": str(session.site.public_id),
            "date": local_day.isoformat(),
            "amount": amount,
            "last4": session.pan_last4,
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "receipts:public", args=[receipts.receipt_token(session)]
    )
