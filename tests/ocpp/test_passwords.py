"""Charger passwords (OCPP security profile 1/2): generated, shown once, stored as a hash."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from evpay.models import AuditEvent
from terminals.models import ChargePoint
from tests.dashboard.factories import make_site

pytestmark = pytest.mark.django_db


@pytest.fixture
def charge_point():
    return ChargePoint.objects.create(identity="CP-DEPOT-1", site=make_site())


def test_the_command_prints_a_new_password_once_and_stores_only_its_hash(charge_point):
    out = StringIO()
    call_command("ocpp_charger_password", "CP-DEPOT-1", stdout=out)
    password = out.getvalue().split("password: ")[1].strip()
    charge_point.refresh_from_db()
    assert len(password) == 32 and password not in charge_point.password_hash
    assert charge_point.check_password(password) and not charge_point.check_password("x" * 32)
    assert AuditEvent.objects.filter(action="ocpp.password_set").exists()


def test_the_command_refuses_an_unknown_charger():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no charge point"):
        call_command("ocpp_charger_password", "NOPE", stdout=StringIO())


def test_the_admin_action_shows_the_password_once(client_for, admin_user, charge_point):
    client = client_for(admin_user)
    response = client.post(
        reverse("admin:terminals_chargepoint_changelist"),
        {"action": "new_password", "_selected_action": [charge_point.pk]},
        follow=True,
    )
    charge_point.refresh_from_db()
    text = response.content.decode()
    shown = text.split("password ")[1].split(" ")[0]
    assert charge_point.check_password(shown)
    page = client.get(reverse("admin:terminals_chargepoint_change", args=[charge_point.pk]))
    assert shown not in page.content.decode() and charge_point.password_hash not in (
        page.content.decode()
    )


def test_a_charger_without_a_password_cannot_authenticate(charge_point):
    assert not charge_point.check_password("")
