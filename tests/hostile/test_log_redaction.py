"""No credential reaches a log line: API keys sent with the wrong scheme, Authorization header
values, passwords."""

import io
import logging

import pytest

from evpay.logging import RedactSecretsFilter
from sessions.models import ApiKey
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def raw_key(db):
    _, raw = ApiKey.issue("charger", f.make_site())
    return raw


@pytest.mark.parametrize("scheme", ["Token", "Basic", "bearer-ish", ""])
def test_a_key_sent_with_the_wrong_scheme_is_401_and_never_logged(
    client, caplog, settings, raw_key, scheme
):
    # django-ninja printed the whole header when DEBUG is on (the `make run` demo runs so).
    settings.DEBUG = True
    caplog.set_level(logging.DEBUG)
    response = client.get(
        "/api/v1/sessions/00000000-0000-0000-0000-000000000000",
        HTTP_AUTHORIZATION=f"{scheme} {raw_key}".strip(),
    )
    assert response.status_code == 401
    secret = raw_key.split("_", 2)[2]
    for record in caplog.records:
        assert secret not in record.getMessage(), record.getMessage()
        assert raw_key not in record.getMessage()


def test_the_stdout_handler_masks_keys_authorization_and_passwords(raw_key):
    # Whatever a library logs, the configured handler writes it masked.
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "stdout")
    stream = io.StringIO()
    old = handler.setStream(stream)
    try:
        log = logging.getLogger("some.library")
        log.error("Unexpected auth - '%s'", f"Token {raw_key}")
        log.error("headers: Authorization: Basic dXNlcjpodW50ZXIy, Accept: */*")
        log.error("login with password=hunter2&username=ada")
        log.error('payload {"password": "hunter2", "user": "ada"}')
        try:
            raise ValueError(f"bad key {raw_key}")
        except ValueError:
            log.exception("failed")
    finally:
        handler.setStream(old)
    written = stream.getvalue()
    secret = raw_key.split("_", 2)[2]
    assert secret not in written
    assert "dXNlcjpodW50ZXIy" not in written
    assert "hunter2" not in written
    assert "evp_" in written and "[redacted]" in written  # it says what was there
    assert "username=ada" in written  # only the secret goes


def test_the_filter_leaves_ordinary_messages_alone():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "session %s closed", ("abc",), None)
    assert RedactSecretsFilter().filter(record)
    assert record.getMessage() == "session abc closed"
