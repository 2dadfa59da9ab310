"""Schema-driven fuzzing of the charger API with schemathesis: no input gives a 5xx.

Runs against the Django WSGI app in-process (the served OpenAPI document drives generation).
No terminal is involved: starting a session only writes the row; the authorisation task is
enqueued after commit, which never happens inside this test's rolled-back transaction.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from sessions.models import ApiKey, Tariff
from terminals.models import Connector, Site, Terminal

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def keep_test_connection():
    # Called straight through WSGI (not Django's test client), each request would close the
    # database connection at its end, and with it the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(db, keep_test_connection):
    site = Site.objects.create(name="Fuzz site")
    Tariff.objects.create(site=site, name="T", price_per_kwh_minor=40, authorise_amount_minor=5000)
    terminal = Terminal.objects.create(
        terminal_id="10000099", name="T", site=site, host="127.0.0.1"
    )
    Connector.objects.create(terminal=terminal, evse_id="NL*FUZZ*1", label="fuzz")
    return ApiKey.issue("fuzzer", site)[1]


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_makes_the_api_fail_with_a_server_error(case, api_key):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {api_key}"}, checks=[not_a_server_error]
    )
