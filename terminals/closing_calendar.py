"""The closings page's month calendar: per terminal, each day's closing state.

One query for the month (all terminals shown), grouped in Python by terminal and business
date. A day closed more than once (a rerun) shows its latest closing, the one that counts.
"""

from datetime import date

from django.urls import reverse
from django.utils import timezone
from django.utils.dates import WEEKDAYS_ABBR
from django.utils.translation import gettext_lazy

from evpay import charts
from evpay.web import parse_uuid
from terminals.models import PeriodClosing

State = PeriodClosing.State
# Each state has a colour, a symbol and a word: never colour alone.
STATE_MARKS = {
    State.MATCHED: ("✓", gettext_lazy("Matched")),
    State.MISMATCH: ("≠", gettext_lazy("Mismatch")),
    State.UNVERIFIED: ("?", gettext_lazy("Unverified (no totals)")),
    State.FAILED: ("✗", gettext_lazy("Failed")),
    State.PENDING: ("…", gettext_lazy("Running")),
}
MAX_TERMINALS = 24  # calendars on one page; the terminal filter narrows it to one


def parse_month(value: str | None, today: date) -> date:
    try:
        year, month = (int(p) for p in (value or "").split("-"))
        return date(year, month, 1)
    except ValueError:
        return today.replace(day=1)


def _month_query(params, month: str) -> str:
    query = params.copy()
    for key in ("page", "month", "format"):
        query.pop(key, None)
    query["month"] = month
    return query.urlencode()


def month_calendars(params, today: date | None = None) -> dict:
    today = today or timezone.localdate()
    first = parse_month(params.get("month"), today)
    after = charts.shift_month(first, 1)
    qs = PeriodClosing.objects.filter(business_date__gte=first, business_date__lt=after)
    for key, lookup in (("terminal", "terminal__public_id"), ("site", "terminal__site__public_id")):
        if params.get(key):
            value = parse_uuid(params[key])
            qs = qs.filter(**{lookup: value}) if value else qs.none()
    rows = qs.order_by(
        "terminal__site__name", "terminal__name", "terminal_id", "business_date", "period_end", "id"
    ).values_list(
        "terminal_id",
        "terminal__name",
        "terminal__terminal_id",
        "terminal__site__name",
        "business_date",
        "state",
        "public_id",
    )
    terminals: dict[int, dict] = {}
    for pk, name, tid, site, day, state, public_id in rows:
        entry = terminals.setdefault(
            pk, {"name": name, "terminal_id": tid, "site": site, "days": {}}
        )
        entry["days"][day] = (state, public_id)  # later rows (reruns) replace earlier ones

    weeks = charts.month_weeks(first.year, first.month)
    calendars = []
    for entry in list(terminals.values())[:MAX_TERMINALS]:
        counts = dict.fromkeys(STATE_MARKS, 0)
        grid = []
        for week in weeks:
            cells = []
            for day in week:
                cell = {"day": day}
                if day is not None and day in entry["days"]:
                    state, public_id = entry["days"][day]
                    symbol, label = STATE_MARKS.get(state, ("·", state))
                    counts[state] = counts.get(state, 0) + 1
                    cell |= {
                        "state": state,
                        "symbol": symbol,
                        "label": label,
                        "url": reverse("terminals:closing_detail", args=[public_id]),
                    }
                cells.append(cell)
            grid.append(cells)
        summary = ", ".join(f"{n} {STATE_MARKS[s][1].lower()}" for s, n in counts.items() if n)
        calendars.append(entry | {"weeks": grid, "summary": summary})
    return {
        "month": first,
        "calendars": calendars,
        "hidden": max(len(terminals) - MAX_TERMINALS, 0),
        "prev_query": _month_query(params, f"{charts.shift_month(first, -1):%Y-%m}"),
        "next_query": _month_query(params, f"{after:%Y-%m}"),
        "legend": [(state, *mark) for state, mark in STATE_MARKS.items()],
        # Django's own abbreviations (its catalogues translate them), Monday first.
        "weekdays": [WEEKDAYS_ABBR[i] for i in range(7)],
    }
