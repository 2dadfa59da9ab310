"""A small soak as a process, on a database and embedded broker of its own (its chaos
terminates database connections and flushes Redis, so never the suite's): sessions go both
through the JSON API and over OCPP (two ocpp_server processes, emulated 1.6 and 2.0.1
chargers), faults are injected, and every must-be-0 figure is 0."""

import json
import os
import subprocess
import sys

import pytest

from evpay.management.commands.soak import MUST_BE_ZERO
from tests.procs import ROOT

pytestmark = pytest.mark.slow


def _figures(output: str) -> dict:
    lines = output.splitlines()
    start = lines.index("{")
    end = start + lines[start:].index("}")
    return json.loads("\n".join(lines[start : end + 1]))


def test_a_small_soak_runs_sessions_over_ocpp_and_the_api_with_every_must_be_0_figure_0(
    tmp_path,
):
    env = dict(os.environ)
    env.update(
        {
            "DEBUG": "1",
            "EVPAY_VAR_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'soak.sqlite3'}",
            "CELERY_BROKER_URL": "filesystem://",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("EVPAY_REQUIRE_SERVICES", None)
    run = subprocess.run(
        [sys.executable, "manage.py", "soak", "--sessions", "24", "--terminals", "4"]
        + ["--workers", "1", "--fault-rate", "0.3", "--seed", "5", "--window", "60"]
        + ["--time-limit", "300", "--ocpp-share", "0.5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = _figures(run.stdout)
    assert {k: figures[k] for k in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)
    assert figures["unresolved_after_window"] == 0
    assert figures["sessions"] >= 24
    # Half the terminals are OCPP chargers: both paths ran and OCPP sessions were paid.
    assert 1 <= figures["ocpp_sessions"] < figures["sessions"], figures
    assert figures["ocpp_sessions_by_outcome"].get("captured", 0) >= 1, figures
