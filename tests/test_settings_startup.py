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
