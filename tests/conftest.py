"""Shared personas and helpers for the whole suite."""

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from terminals.emulator.harness import EmulatorProcess

# No connection pool in the test process itself: its helper threads (concurrency tests, the
# channel-1 responders) end without closing their connections, and under a pool each would
# keep a slot checked out until the pool ran dry. The processes the tests start (workers, the
# device channel, gunicorn, the soak) run with the pool as deployed; test_connection_pool.py
# holds a worker to two connections.
settings.DATABASES["default"]["OPTIONS"].pop("pool", None)

PASSWORD = "correct-horse-battery-staple-42"


def _make_user(django_user_model, username, role=None, **extra):
    user = django_user_model.objects.create_user(username=username, password=PASSWORD, **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def viewer(db, django_user_model):
    return _make_user(django_user_model, "vera-viewer", "viewer")


@pytest.fixture
def operator(db, django_user_model):
    return _make_user(django_user_model, "otto-operator", "operator")


@pytest.fixture
def admin_user(db, django_user_model):
    return _make_user(django_user_model, "ada-admin", "admin")


@pytest.fixture
def no_role_user(db, django_user_model):
    return _make_user(django_user_model, "nora-norole")


@pytest.fixture
def client_for(client):
    """client_for(user) -> a test client logged in as that user (None = anonymous)."""

    def login(user):
        if user is not None:
            client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return client

    return login


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` need real row locks; elsewhere they skip with a reason,
    except in CI (EVPAY_REQUIRE_SERVICES=1) where a missing PostgreSQL is a failure."""
    import os

    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if on_postgres:
        return
    if os.environ.get("EVPAY_REQUIRE_SERVICES") == "1":
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(pytest.mark.usefixtures("_fail_without_postgres"))
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgresql://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def _fail_without_postgres():
    pytest.fail("EVPAY_REQUIRE_SERVICES=1 but DATABASE_URL is not PostgreSQL")


# A real emulator process shared by the whole run; each test takes the next of its terminals
# and clears its faults, so tests do not see each other's faults or sessions.
@pytest.fixture(scope="session")
def emulator():
    with EmulatorProcess(count=4, channel1="terminal", card_wait=2.0) as emu:
        yield emu


@pytest.fixture
def emu_terminal(emulator):
    """A fresh emulator terminal state for each test: faults cleared, online."""
    used = emulator._used = getattr(emulator, "_used", 0) + 1
    info = emulator.terminals[used % len(emulator.terminals)]
    emulator.clear_faults(info["terminal_id"])
    emulator.set_offline(info["terminal_id"], False)
    emulator.set_condition(info["terminal_id"], "OK")
    emulator.request("DELETE", f"/terminals/{info['terminal_id']}/present")
    emulator.set_dialect(info["terminal_id"], "ccv")
    return info


@pytest.fixture(params=["ccv", "minimal"])
def each_dialect(request, emulator, emu_terminal):
    """Runs a test against the CCV-like terminal and against the "minimal" dialect (service
    requests it lacks answered with ServiceResponse Failure, no TerminalID on channel 1,
    20-character STANs, free text in PrivateData, a display update after the response)."""
    emulator.set_dialect(emu_terminal["terminal_id"], request.param)
    return request.param


@pytest.fixture(scope="session")
def compiled_catalogues():
    """The .mo files, compiled from locale/ when missing or older than their .po (`make test`
    compiles them first; this keeps a plain `pytest tests/...` working). Needs GNU gettext."""
    import shutil
    from pathlib import Path

    from django.conf import settings
    from django.core.management import call_command

    stale = [
        po
        for base in settings.LOCALE_PATHS
        for po in Path(base).glob("*/LC_MESSAGES/*.po")
        if not po.with_suffix(".mo").exists()
        or po.with_suffix(".mo").stat().st_mtime < po.stat().st_mtime
    ]
    if stale:
        if shutil.which("msgfmt") is None:
            pytest.fail("msgfmt (GNU gettext) is missing: apt-get install gettext")
        call_command("compilemessages", ignore_patterns=[".venv", "var"], verbosity=0)
