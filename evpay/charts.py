"""Geometry for the server-rendered SVG figures: bars, stacked shares, a time strip, a month grid.

Pure functions from numbers and dates to coordinates in a chart's own viewBox; the templates
under templates/includes/charts/ draw them and the apps' stats modules supply the figures. No
queries, no Django: the figures are computed where their data lives.
"""

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.utils.translation import gettext, gettext_lazy

# The bar charts' viewBox: a fixed width shared by the days, so a week's bars are not giants
# on a phone and a month's still fit; its text scales with it.
WIDTH = 480
BAR_HEIGHT = 120
TOP = 14  # room for the value printed above the tallest bar
AXIS = 16  # room for the day labels under the bars


@dataclass
class Bar:
    x: float
    cx: float  # the middle, for the texts
    y: float
    width: float
    height: float
    value: float
    label: str = ""  # the tick under the bar ("" when the slot is too crowded)
    data: dict = field(default_factory=dict)  # what the template shows: day, texts, link


@dataclass
class Segment:
    y: float
    height: float
    key: str
    value: int


@dataclass
class StackedBar:
    x: float
    cx: float
    width: float
    segments: list[Segment]
    total: int
    label: str = ""
    data: dict = field(default_factory=dict)


def _label_step(n: int) -> int:
    """Label every day up to 10 bars, then every few so the ticks never overlap."""
    return 1 if n <= 10 else (n + 9) // 10


def _frame(bars: list, **extra) -> dict:
    """The drawing's size and the y positions every bar chart template needs, around its bars."""
    return {
        "bars": bars,
        "width": WIDTH,
        "height": TOP + BAR_HEIGHT + AXIS,
        "baseline": TOP + BAR_HEIGHT,
        "label_y": TOP + BAR_HEIGHT + AXIS - 4,
        **extra,
    }


def bars(
    values: list[float], labels: list[str], data: list[dict] | None = None, scale=None
) -> dict:
    """Bars scaled to `scale` or the largest value (all zeros draw flat, zero-height bars)."""
    n = len(values)
    top = scale or max(values, default=0) or 1
    step = _label_step(n)
    slot = WIDTH / max(n, 1)
    out = []
    for i, value in enumerate(values):
        height = BAR_HEIGHT * value / top
        out.append(
            Bar(
                x=round(i * slot + slot * 0.15, 2),
                cx=round((i + 0.5) * slot, 2),
                y=round(TOP + BAR_HEIGHT - height, 2),
                width=round(slot * 0.7, 2),
                height=round(height, 2),
                value=value,
                label=labels[i] if i % step == 0 else "",
                data=(data or [{}] * n)[i],
            )
        )
    return _frame(out)


def stacked_shares(
    parts: list[dict[str, int]], keys: list[str], labels: list[str], data=None
) -> dict:
    """Bars of equal height split into the shares of `keys` (bottom first); empty days empty."""
    n = len(parts)
    step = _label_step(n)
    slot = WIDTH / max(n, 1)
    out = []
    for i, counts in enumerate(parts):
        total = sum(counts.get(k, 0) for k in keys)
        y = TOP + BAR_HEIGHT
        segments = []
        for key in keys:
            value = counts.get(key, 0)
            height = BAR_HEIGHT * value / total if total else 0
            y -= height
            segments.append(Segment(y=round(y, 2), height=round(height, 2), key=key, value=value))
        out.append(
            StackedBar(
                x=round(i * slot + slot * 0.15, 2),
                cx=round((i + 0.5) * slot, 2),
                width=round(slot * 0.7, 2),
                segments=segments,
                total=total,
                label=labels[i] if i % step == 0 else "",
                data=(data or [{}] * n)[i],
            )
        )
    return _frame(out, top=TOP)


STRIP_WIDTH = 480  # 20 units an hour over a day


def strip(intervals: list[tuple[datetime, datetime, str]], start: datetime, end: datetime):
    """Intervals clipped to [start, end) as x/width in a STRIP_WIDTH-wide viewBox."""
    t0, span = start.timestamp(), end.timestamp() - start.timestamp()  # real seconds
    out = []
    for a, b, key in intervals:
        a, b = max(a, start), min(b, end)
        if b <= a:
            continue
        x = STRIP_WIDTH * (a.timestamp() - t0) / span
        width = STRIP_WIDTH * (b.timestamp() - a.timestamp()) / span
        out.append({"x": round(x, 2), "width": round(width, 2), "key": key, "start": a, "end": b})
    return out


def duration_text(seconds: float) -> str:
    """'3 h 05 min', '12 min', '0 min': durations in the figures' text alternatives."""
    minutes = int(round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if hours:
        return gettext("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
    return gettext("%(minutes)d min") % {"minutes": minutes}


def hour_ticks(start: datetime, end: datetime, every: int = 3) -> list[dict]:
    """Ticks on whole local hours (start must be aware in the zone the labels should read)."""
    span = end.timestamp() - start.timestamp()  # real seconds, also across a DST change
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    ticks, at = [], first
    while at < end:
        if at.hour % every == 0:
            x = STRIP_WIDTH * (at.timestamp() - start.timestamp()) / span
            ticks.append({"x": round(x, 2), "label": at.strftime("%H:%M")})
        at += timedelta(hours=1)
    return ticks


def month_weeks(year: int, month: int) -> list[list[date | None]]:
    """The month as weeks Monday to Sunday; days of the neighbouring months are None."""
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, month)
    return [[d if d.month == month else None for d in week] for week in weeks]


def shift_month(day: date, months: int) -> date:
    """The first of the month `months` away from day's month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


# Date presets of the overview's figures: (key, label).
PRESETS = [
    ("7d", gettext_lazy("Last 7 days")),
    ("30d", gettext_lazy("Last 30 days")),
    ("month", gettext_lazy("This month")),
]
PRESETS.append(("last_month", gettext_lazy("Last month")))
DEFAULT_PRESET = "7d"


def preset_days(key: str, today: date) -> tuple[str, date, date]:
    """(key, first day, last day) of a preset, inclusive; an unknown key is the default."""
    if key == "30d":
        return key, today - timedelta(days=29), today
    if key == "month":
        return key, today.replace(day=1), today
    if key == "last_month":
        first = shift_month(today, -1)
        return key, first, today.replace(day=1) - timedelta(days=1)
    return DEFAULT_PRESET, today - timedelta(days=6), today


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
