"""A terminal's status over time, from its status history (TerminalStatusChange, written by
services.set_status on every status poll that changes it): the last 24 hours as a strip and
the share of time it was up per day and per month, in the site's time zone.

One query whatever the history's length: the changes since the start of the oldest month
shown, the last change before it (the status the window starts in) and, for the terminal page's
history table, the latest few.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import dateformat, formats, timezone
from django.utils.translation import gettext, gettext_lazy

from evpay import charts
from evpay.web import start_of_day
from terminals.models import Terminal, TerminalStatus, TerminalStatusChange

ONLINE, BUSY, NOT_READY, OFFLINE, UNKNOWN = "online", "busy", "not_ready", "offline", "unknown"
CATEGORY_LABELS = {
    ONLINE: gettext_lazy("Online"),
    BUSY: gettext_lazy("Busy"),
    NOT_READY: gettext_lazy("Not ready (logged out, locked, inoperable, reprint)"),
    OFFLINE: gettext_lazy("Offline"),
    UNKNOWN: gettext_lazy("Unknown"),
}
CATEGORY = {
    TerminalStatus.IDLE: ONLINE,
    TerminalStatus.READY: ONLINE,
    # It answers but tells no state: reachable, so it counts as online.
    TerminalStatus.REACHABLE: ONLINE,
    TerminalStatus.BUSY: BUSY,
    TerminalStatus.REPRINT_TICKET: NOT_READY,
    TerminalStatus.LOGGED_OUT: NOT_READY,
    TerminalStatus.LOCKED: NOT_READY,
    TerminalStatus.INOPERABLE: NOT_READY,
    TerminalStatus.OFFLINE: OFFLINE,
    TerminalStatus.UNKNOWN: UNKNOWN,
}
# "Up" is able to take a payment now or after the one in progress.
UP = frozenset({ONLINE, BUSY})
MONTHS = 3
DAYS = 7


def category(status: str) -> str:
    return CATEGORY.get(status, UNKNOWN)


# What a row of the history read holds: the chart's three, and the table's id and detail.
CHANGE_FIELDS = ("id", "at", "from_status", "to_status", "detail")


def read_changes(terminal: Terminal, start: datetime, latest: int = 0) -> list[tuple]:
    """The status history the chart and the table need, newest first, in one query: every
    change after `start`, the last one at or before it, and the latest `latest` at any time.

    Tuples, not model instances: a busy terminal writes thousands of changes in three months,
    and making each an instance would take several times as long as reading it."""
    changes = terminal.status_changes.order_by("-at", "-id")
    # Each part is a range of `at`, a seek on the (terminal, -at) index; lists of ids would have
    # the database test every change the terminal ever had. A range may take in a few more
    # rows of the same time: the table's are still the first `latest`.
    last_before = changes.filter(at__lte=start).values("at")[:1]
    wanted = Q(at__gt=start) | Q(at__gte=Subquery(last_before))
    if latest:
        # From the latest-th newest, or from the oldest when there are fewer.
        nth_newest = changes.values("at")[latest - 1 : latest]
        oldest = changes.order_by("at").values("at")[:1]
        wanted |= Q(at__gte=Coalesce(Subquery(nth_newest), Subquery(oldest)))
    return list(changes.filter(wanted).values_list(*CHANGE_FIELDS))


def status_intervals(terminal: Terminal, start: datetime, end: datetime, rows: list[tuple]):
    """[(from, to, category)] covering [start, end) from the status history `read_changes`
    read for `start`."""
    changes = [(at, was, to) for _pk, at, was, to, _detail in reversed(rows) if start < at < end]
    if changes:
        # What it was before its first change in the window: set_status writes each change
        # from the status it replaced, so this is the last change before the window's "to".
        status = changes[0][1]
    else:
        before = next((to for _pk, at, _was, to, _detail in rows if at <= start), None)
        # No change in the window: the last one before it, or with no history at all the
        # status it has held throughout.
        status = before if before is not None else terminal.status
    intervals, since = [], start
    for at, _from, to in changes:
        intervals.append((since, at, category(status)))
        since, status = at, to
    intervals.append((since, end, category(status)))
    return [i for i in intervals if i[1] > i[0]]


def _seconds_by_category(intervals, start, end) -> dict[str, float]:
    out = dict.fromkeys(CATEGORY_LABELS, 0.0)
    for a, b, key in intervals:
        a, b = max(a, start).astimezone(UTC), min(b, end).astimezone(UTC)
        if b > a:
            out[key] += (b - a).total_seconds()
    return out


def _period(intervals, label, start, end, now) -> dict:
    # In UTC: two times in one zone subtract as wall clocks, and a DST day is not 24 hours.
    start, end = start.astimezone(UTC), min(end, now).astimezone(UTC)
    span = (end - start).total_seconds()
    seconds = _seconds_by_category(intervals, start, end)
    up = sum(seconds[k] for k in UP)
    percent = round(100 * up / span, 1) if span > 0 else None
    return {
        "label": label,
        "percent": percent,
        "text": gettext("%(period)s: up %(percent)s%% of the time")
        % {"period": label, "percent": formats.number_format(percent, 1, use_l10n=True)}
        + (
            gettext(" (offline %(duration)s)")
            % {"duration": charts.duration_text(seconds[OFFLINE])}
            if seconds[OFFLINE]
            else ""
        )
        if percent is not None
        else gettext("%(period)s: no time yet") % {"period": label},
    }


def terminal_uptime(terminal: Terminal, now: datetime | None = None, history: int = 0) -> dict:
    """The chart's figures and, from the same query, the latest `history` status changes (the
    terminal page's table, newest first) as "history"."""
    now = now or timezone.now()
    tz = ZoneInfo(terminal.site.time_zone)
    today = timezone.localdate(now, tz)
    first_month = charts.shift_month(today, -(MONTHS - 1))
    window_start = min(start_of_day(first_month, tz), now - timedelta(hours=24))
    rows = read_changes(terminal, window_start, latest=history)
    intervals = status_intervals(terminal, window_start, now, rows)

    strip_start = now - timedelta(hours=24)
    segments = charts.strip(intervals, strip_start, now)
    for seg in segments:
        a, b = seg["start"].astimezone(tz), seg["end"].astimezone(tz)
        seg["text"] = f"{str(CATEGORY_LABELS[seg['key']]).split(' (')[0]} {a:%H:%M}–{b:%H:%M}"
    totals = _seconds_by_category(intervals, strip_start, now)
    summary = ", ".join(
        f"{str(CATEGORY_LABELS[k]).split(' (')[0].lower()} {charts.duration_text(v)}"
        for k, v in totals.items()
        if v
    )

    days = []
    for i in range(DAYS - 1, -1, -1):
        day = today - timedelta(days=i)
        start = start_of_day(day, tz)
        label = dateformat.format(day, "D Y-m-d")
        days.append(_period(intervals, label, start, start + timedelta(days=1), now))
        days[-1]["day"] = day
    day_chart = charts.bars(
        [d["percent"] or 0 for d in days],
        [dateformat.format(d["day"], "D") for d in days],
        days,
        scale=100,
    )
    months = []
    for i in range(MONTHS - 1, -1, -1):
        month = charts.shift_month(today, -i)
        start = start_of_day(month, tz)
        end = start_of_day(charts.shift_month(month, 1), tz)
        months.append(_period(intervals, dateformat.format(month, "F Y"), start, end, now))
    return {
        "time_zone": str(tz),
        "strip": segments,
        "strip_width": charts.STRIP_WIDTH,
        "ticks": charts.hour_ticks(strip_start.astimezone(tz), now.astimezone(tz)),
        "strip_summary": summary,
        "strip_start": strip_start,
        "days": days,
        "day_chart": day_chart,
        "months": months,
        "legend": list(CATEGORY_LABELS.items()),
        "history": [
            TerminalStatusChange(terminal=terminal, **dict(zip(CHANGE_FIELDS, row, strict=True)))
            for row in rows[:history]
        ],
    }
