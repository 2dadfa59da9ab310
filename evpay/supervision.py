"""What the process supervisor (evpay/testbed/supervisor.py, behind `make run`) tells the
web process: a small JSON file, ``settings.EVPAY_SUPERVISOR_STATE_FILE`` (var/supervisor.json).

The supervisor is a tool, not the web process, and has no database of its own to trust while
the stack heals (SQLite may be the very thing that is locked); a file written atomically is
readable by any process on the host and costs one ``stat`` per page. In production, where a
process manager such as systemd runs the processes, the file does not exist and no banner shows.

Format: ``{"pid", "updated_at", "children": {name: {"pid", "state", "restarts_today",
"last_exit"}}, "alerts": [{"child", "restarts", "window_minutes", "at", "log"}]}``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

log = logging.getLogger(__name__)

# How long a banner stays up after the burst of restarts that raised it.
ALERT_SHOWN_FOR = timedelta(hours=1)


def state_file() -> Path:
    return Path(settings.EVPAY_SUPERVISOR_STATE_FILE)


def write_state(state: dict, path: Path | None = None) -> None:
    """Readers see the old file or the new one, never half of it."""
    path = path or state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, path)


def read_state(path: Path | None = None) -> dict:
    path = path or state_file()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("supervisor state %s unreadable: %s", path, exc)
        return {}


def restart_alerts(now: datetime | None = None, path: Path | None = None) -> list[dict]:
    """The latest alert per child raised within ALERT_SHOWN_FOR, newest first, each with a
    ``message`` for staff and ``at`` as an aware datetime."""
    now = now or timezone.now()
    latest: dict[str, dict] = {}
    for alert in read_state(path).get("alerts", []):
        try:
            at = datetime.fromisoformat(alert["at"])
            child, restarts = str(alert["child"]), int(alert["restarts"])
            minutes = alert.get("window_minutes", 10)
        except (KeyError, TypeError, ValueError):
            continue
        if now - at > ALERT_SHOWN_FOR:
            continue
        if child not in latest or latest[child]["at"] < at:
            latest[child] = {
                "child": child,
                "at": at,
                "restarts": restarts,
                "log": alert.get("log", ""),
                "message": gettext(
                    "The %(child)s restarted %(restarts)d times in %(minutes)s minutes"
                )
                % {"child": child, "restarts": restarts, "minutes": f"{minutes:g}"},
            }
    return sorted(latest.values(), key=lambda a: a["at"], reverse=True)
