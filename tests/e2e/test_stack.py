"""End to end: the whole stack as `make run` starts it (separate processes: emulator fleet,
device channel, OCPP server, Celery worker and beat, gunicorn, traffic simulator playing API
and OCPP chargers), sped up, for about a minute. Then: money moved as our records say, OCPP
sessions were paid, the banner says how to connect a charger, the dashboard answers,
everything stops."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from tests.e2e.stack import emulator_base, group_alive, start_stack, stop_stack
from tests.procs import ROOT, free_port

pytestmark = pytest.mark.slow
RUN_SECONDS = 60


def _database_url(tmp_path) -> str:
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        return f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
    import psycopg

    params = {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**params) as conn:
        conn.execute("DROP DATABASE IF EXISTS evpay_e2e WITH (FORCE)")
        conn.execute("CREATE DATABASE evpay_e2e")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{params['host']}:{params['port']}/evpay_e2e"


def _broker_url(var) -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/5")
        client.flushdb()
        return "redis://127.0.0.1:6379/5"
    return "filesystem://"


def _get(url):
    request = urllib.request.Request(url)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_whole_stack_runs_end_to_end_and_stops_cleanly(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    port, control, ocpp_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "EVPAY_VAR_DIR": str(var),
            "DEBUG": "1",
            "EVPAY_PORT": str(port),
            "EVPAY_EMULATOR_BASE_PORT": str(emulator_base(5)),  # 4 + the external charger's
            "EVPAY_EMULATOR_CONTROL_PORT": str(control),
            "EVPAY_DEVICE_CHANNEL_PORT": str(free_port()),
            "EVPAY_OCPP_PORT": str(ocpp_port),
            "EVPAY_DEMO_TERMINALS": "4",
            "EVPAY_DEMO_SPEED": "3",
            "EVPAY_ADMIN_PASSWORD": "e2e-admin-password-123",
            "DATABASE_URL": _database_url(tmp_path),
            "CELERY_BROKER_URL": _broker_url(var),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("EVPAY_REQUIRE_SERVICES", None)
    stack, out = start_stack(env, var / "runstack.out")
    try:
        deadline = time.monotonic() + 180
        text = ""
        while "Stop:" not in text:
            assert stack.poll() is None, (var / "runstack.out").read_text()
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.5)
            text = (var / "runstack.out").read_text()
        pids = {name: int(pid) for name, pid in re.findall(r"(\w+) \(pid (\d+)\)", text)}
        assert set(pids) == {
            "emulator",
            "device_channel",
            "ocpp",
            "worker",
            "beat",
            "web",
            "simulator",
        }
        ocpp = json.loads((var / "demo-ocpp.json").read_text())
        reserved = ocpp["chargers"][ocpp["reserved"]]
        assert f"OCPP:    ws://127.0.0.1:{ocpp_port}/ocpp/<charge point id>" in text
        assert (
            f"URL ws://127.0.0.1:{ocpp_port}/ocpp/{ocpp['reserved']}   user {ocpp['reserved']}"
            f"   password {reserved['password']}"
        ) in text
        assert (
            f"curl -X POST http://127.0.0.1:{control}/terminals/{reserved['terminal_id']}/present "
            """-H 'Content-Type: application/json' -d '{"card": "visa_ok"}'"""
        ) in text
        time.sleep(RUN_SECONDS)

        status, headers, _ = _get(f"http://127.0.0.1:{port}/")
        assert status == 302 and "/login/" in headers["Location"]
        status, _, body = _get(f"http://127.0.0.1:{port}/login/")
        assert status == 200 and "Log in" in body

        def manage(*args):
            return subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        check = manage("check_ledger", "--control-url", f"http://127.0.0.1:{control}")
        figures = json.loads(check.stdout)
        assert check.returncode == 0, figures
        assert figures["double_captures"] == figures["lost_money"] == figures["disagreements"] == 0
        counts = json.loads(
            manage(
                "shell",
                "-c",
                (
                    "import json; from sessions.models import ChargingSession as S; "
                    "from evpay.models import AuditEvent as A; "
                    "print(json.dumps({'authorised': S.objects.exclude(authorised_at=None).count(), "
                    "'captured': S.objects.filter(close_reason='captured').count(), "
                    "'ocpp_captured': S.objects.filter(close_reason='captured', "
                    "connector__charge_point__isnull=False).count(), "
                    "'stopped_by_card': A.objects.filter(reason__startswith='stopped by card').count()}))"
                ),
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        assert counts["authorised"] >= 5, counts
        assert counts["captured"] >= 3, counts
        assert counts["stopped_by_card"] >= 1, counts
        assert counts["ocpp_captured"] >= 1, counts
    finally:
        stop_stack(stack, out)
    text = (var / "runstack.out").read_text()
    assert "All processes stopped." in text, text[-2000:]
    leftovers = [name for name, pid in pids.items() if group_alive(pid)]
    assert leftovers == [], f"orphan processes: {leftovers}"
