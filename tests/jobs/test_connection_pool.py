"""The per-process connection pool (DB_POOL_MAX_SIZE) under a real worker: a thread holds a
connection only while it works, so a worker with more threads than connections keeps going."""

import subprocess
import sys
import time

import pytest
from django.db import connection

from evpay.testbed.supervisor import worker_command
from sessions import services
from sessions.models import ChargingSession, SessionState
from tests.charging.conftest import CHARGER, make_world
from tests.procs import ROOT, Proc, process_env, purge_broker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _settings_of(**env) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS'])"
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**process_env(**env), "DJANGO_SETTINGS_MODULE": "evpay.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_postgresql_gets_a_pool_and_refuses_persistent_connections_beside_it():
    url = "postgresql://postgres@127.0.0.1:5432/evpay"
    pooled = _settings_of(DATABASE_URL=url)
    assert "'max_size': 10" in pooled.stdout, pooled.stderr
    assert "'pool'" not in _settings_of(DATABASE_URL=url, DB_POOL_MAX_SIZE=0).stdout
    both = _settings_of(DATABASE_URL=url, DB_CONN_MAX_AGE=60)
    assert both.returncode != 0
    assert "DB_CONN_MAX_AGE and the connection pool exclude each other" in both.stderr
    assert "'pool'" not in _settings_of(DATABASE_URL="sqlite:///var/x.sqlite3").stdout


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pool is PostgreSQL's (psycopg_pool)"
)
def test_a_worker_with_two_connections_serves_sessions_on_four_threads(emulator):
    """Each authorisation's channel-1 thread (terminal arrangement) checks the session in the
    database, then ends; each worker thread waits for the terminal. Neither may keep a
    connection: with a slot lost per session, the third would time out waiting for one."""
    purge_broker()
    infos = emulator.terminals[:2]
    worlds = [make_world(info) for info in infos]
    argv = worker_command(4, "pooled@%h") + ["--without-heartbeat"]
    with Proc(argv, log_name="pooled_worker", DB_POOL_MAX_SIZE=2, DB_POOL_TIMEOUT=3) as worker:
        worker.wait_for_log("ready.")
        for round_ in range(3):
            sessions = []
            for info, (_, connectors, _) in zip(infos, worlds, strict=True):
                for connector in connectors[:1]:
                    emulator.present_card(info["terminal_id"], "visa_ok")
                    sessions.append(services.start_session(connector, CHARGER))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = set(
                    ChargingSession.objects.filter(pk__in=[s.pk for s in sessions]).values_list(
                        "state", flat=True
                    )
                )
                if states == {SessionState.AUTHORISED}:
                    break
                assert "PoolTimeout" not in worker.output(), worker.output()[-3000:]
                time.sleep(0.25)
            else:
                raise AssertionError(f"round {round_}: sessions are {states}")
            for session in sessions:
                session.refresh_from_db()
                services.mark_charging_started(session, CHARGER)
                services.record_meter(session, 3000, CHARGER)
                services.mark_unplugged(session, CHARGER)
            deadline = time.monotonic() + 60
            while ChargingSession.objects.filter(
                pk__in=[s.pk for s in sessions], state=SessionState.CLOSED, close_reason="captured"
            ).count() < len(sessions):
                assert time.monotonic() < deadline, worker.output()[-3000:]
                time.sleep(0.25)
    assert "couldn't get a connection" not in worker.output()
