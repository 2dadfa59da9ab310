"""Staff see a banner when a process of `make run` keeps crashing (the supervisor's state file,
read by a context processor into base.html)."""

import json
import sys
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from evpay.testbed.supervisor import Supervisor

pytestmark = pytest.mark.django_db

BANNER = "The worker restarted 3 times in 10 minutes"


@pytest.fixture
def state_file(tmp_path, settings):
    settings.EVPAY_SUPERVISOR_STATE_FILE = tmp_path / "supervisor.json"
    return settings.EVPAY_SUPERVISOR_STATE_FILE


def _crash_until(state_file, tmp_path, restarts: int) -> list[str]:
    """A real supervisor with a worker that exits at once, until it was restarted N times."""
    lines: list[str] = []
    sup = Supervisor(
        {"worker": [sys.executable, "-c", "raise SystemExit(1)"]},
        tmp_path / "log",
        state_file=state_file,
        say=lines.append,
        backoff_base=0.05,
        tick=0.05,
        handle_signals=False,  # pytest keeps its own
    )
    sup.start()
    try:
        deadline = time.monotonic() + 60
        while sum("restarting in" in line for line in lines) < restarts:
            assert time.monotonic() < deadline, lines
            sup.check()
            time.sleep(0.05)
    finally:
        sup.stop()
    return lines


def test_staff_see_a_banner_after_the_worker_restarted_three_times(
    client_for, viewer, state_file, tmp_path
):
    lines = _crash_until(state_file, tmp_path, restarts=3)
    assert any(line.startswith("!!! worker restarted 3 times in 10 minutes") for line in lines)
    html = client_for(viewer).get(reverse("overview")).content.decode()
    assert BANNER in html and 'role="alert"' in html
    assert "worker.log" in html


def test_no_banner_after_fewer_restarts(client_for, viewer, state_file, tmp_path):
    _crash_until(state_file, tmp_path, restarts=2)
    assert "restarted" not in client_for(viewer).get(reverse("overview")).content.decode()


def test_no_banner_without_a_supervisor_or_for_anonymous_visitors(
    client_for, viewer, state_file, tmp_path
):
    assert not state_file.exists()
    assert "restarted" not in client_for(viewer).get(reverse("overview")).content.decode()
    _crash_until(state_file, tmp_path, restarts=3)
    assert BANNER not in client_for(None).get(reverse("login")).content.decode()


def test_the_banner_goes_away_an_hour_after_the_crashes(client_for, viewer, state_file):
    at = (timezone.now() - timedelta(hours=1, minutes=1)).isoformat()
    alert = {"child": "worker", "restarts": 3, "window_minutes": 10, "at": at, "log": "x"}
    state_file.write_text(json.dumps({"alerts": [alert]}))
    assert "restarted" not in client_for(viewer).get(reverse("overview")).content.decode()
