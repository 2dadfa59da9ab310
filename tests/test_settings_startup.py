"""Start-up behaviour of settings.py, run in fresh interpreters (settings load once per process)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args, env_overrides):
    dropped = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_start_up_names_every_missing_setting():
    result = _manage("check", env_overrides={"DEBUG": "0"})
    assert result.returncode != 0
    assert "DEBUG is off and these settings are missing: SECRET_KEY, ALLOWED_HOSTS" in result.stderr


def test_bad_boolean_stops_start_up_with_the_variable_named():
    result = _manage("check", env_overrides={"DEBUG": "sometimes"})
    assert result.returncode != 0
    assert "DEBUG='sometimes' is not a boolean" in result.stderr


def test_check_deploy_is_clean_in_a_production_like_environment():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={
            "DEBUG": "0",
            "SECRET_KEY": "a-long-random-production-secret-" + "x7Kp2" * 10,
            "ALLOWED_HOSTS": "evpay.example.com",
        },
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def _python(code, env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_web_process_refuses_to_start_without_collected_static_files(tmp_path):
    # Issue 18 item 7: with DEBUG off every page was a 500 until collectstatic had run.
    production = {
        "DEBUG": "0",
        "SECRET_KEY": "a-long-random-production-secret-" + "x7Kp2" * 10,
        "ALLOWED_HOSTS": "testserver",
        "EVPAY_VAR_DIR": str(tmp_path),
    }
    page = (
        "import evpay.wsgi\n"
        "from django.test import Client\n"
        "r = Client().get('/login/', secure=True)\n"
        "print(r.status_code, 'static/css/evpay.' in r.content.decode())\n"
    )
    before = _python(page, production)
    assert before.returncode != 0
    assert "static files are not collected" in before.stderr
    assert "collectstatic --noinput" in before.stderr
    collected = _manage("collectstatic", "--noinput", "-v0", env_overrides=production)
    assert collected.returncode == 0, collected.stderr
    after = _python(page, production)
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == ["200", "True"]


_PROXY_HEADER = (
    "import django; django.setup()\n"
    "from django.conf import settings\n"
    "print(repr(settings.SECURE_PROXY_SSL_HEADER))\n"
)


def test_x_forwarded_proto_is_not_trusted_unless_behind_a_proxy(monkeypatch):
    monkeypatch.delenv("EVPAY_BEHIND_PROXY", raising=False)
    # Issue 18 item 9: the header was always trusted, so a client talking to the app directly
    # could claim HTTPS.
    result = _python(_PROXY_HEADER, {"DEBUG": "1", "DJANGO_SETTINGS_MODULE": "evpay.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_x_forwarded_proto_is_trusted_when_behind_a_proxy():
    result = _python(
        _PROXY_HEADER,
        {"DEBUG": "1", "DJANGO_SETTINGS_MODULE": "evpay.settings", "EVPAY_BEHIND_PROXY": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"
