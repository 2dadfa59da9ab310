"""evpay/charts.py: the geometry behind the SVG figures (no database)."""

from datetime import UTC, date, datetime, timedelta

from evpay import charts


def test_presets_are_inclusive_day_ranges_ending_today():
    today = date(2026, 1, 15)
    assert charts.preset_days("7d", today) == ("7d", date(2026, 1, 9), today)
    assert charts.preset_days("30d", today) == ("30d", date(2025, 12, 17), today)
    assert charts.preset_days("month", today) == ("month", date(2026, 1, 1), today)
    # Last month of January is December of the year before.
    assert charts.preset_days("last_month", today) == (
        "last_month",
        date(2025, 12, 1),
        date(2025, 12, 31),
    )
    assert charts.preset_days("bogus", today)[0] == charts.DEFAULT_PRESET


def test_bars_scale_to_the_largest_value_or_a_given_scale():
    chart = charts.bars([0, 5, 10], ["a", "b", "c"])
    assert [b.height for b in chart["bars"]] == [0, charts.BAR_HEIGHT / 2, charts.BAR_HEIGHT]
    assert chart["bars"][2].y == charts.TOP
    assert charts.bars([50], ["x"], scale=100)["bars"][0].height == charts.BAR_HEIGHT / 2
    assert [b.height for b in charts.bars([0, 0], ["a", "b"])["bars"]] == [0, 0]


def test_a_month_of_bars_labels_every_third_day():
    labels = [str(i) for i in range(30)]
    shown = [b.label for b in charts.bars([1] * 30, labels)["bars"] if b.label]
    assert shown == [str(i) for i in range(0, 30, 3)]


def test_stacked_shares_fill_the_bar_bottom_first():
    chart = charts.stacked_shares([{"a": 3, "b": 1}, {}], ["a", "b"], ["1", "2"])
    first, empty = chart["bars"]
    assert [s.height for s in first.segments] == [90.0, 30.0]
    assert first.segments[0].y > first.segments[1].y
    assert empty.total == 0 and all(s.height == 0 for s in empty.segments)


def test_the_strip_clips_intervals_to_its_window():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=24)
    segments = charts.strip(
        [
            (start - timedelta(hours=5), start + timedelta(hours=6), "online"),
            (start + timedelta(hours=6), end + timedelta(hours=1), "offline"),
        ],
        start,
        end,
    )
    assert [(s["x"], s["width"], s["key"]) for s in segments] == [
        (0, charts.STRIP_WIDTH / 4, "online"),
        (charts.STRIP_WIDTH / 4, charts.STRIP_WIDTH * 3 / 4, "offline"),
    ]


def test_month_weeks_start_on_monday_and_blank_other_months():
    weeks = charts.month_weeks(2026, 3)  # 1 March 2026 is a Sunday
    assert weeks[0] == [None] * 6 + [date(2026, 3, 1)]
    assert weeks[-1][1] == date(2026, 3, 31) and weeks[-1][2] is None


def test_durations_read_as_hours_and_minutes():
    assert charts.duration_text(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert charts.duration_text(12 * 60) == "12 min"
