"""Tests for usage_limits.periods: calendar and billing periods, DST, keys and chaining.

Expected values are written out by hand (not recomputed with the code under test), so that a
wrong clamp, a drifting anchor or an off-by-one-hour DST conversion shows up as a wrong datetime.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from usage_limits.periods import (
    ALL_TIME,
    PERIOD_NAMES,
    Period,
    UnknownPeriod,
    current_period,
    next_period,
    period_containing,
    previous_period,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
US = timedelta(microseconds=1)
HOUR = 3600
DAY = 24 * HOUR


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def iso(moment: datetime | None) -> str:
    """Render a UTC datetime as text, so a failing assertion shows the instant readably.

    Also checks that the value is a UTC datetime (``end`` is typed optional, hence ``None``).
    """
    assert moment is not None
    assert moment.tzinfo is UTC, moment
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f").removesuffix(".000000") + "Z"


# --- calendar periods in UTC -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "key", "start", "end"),
    [
        (utc(2026, 1, 31, 23, 59, 59, 999999), "2026-01", utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 28, 12), "2026-02", utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2026, 4, 30, 23, 59, 59), "2026-04", utc(2026, 4, 1), utc(2026, 5, 1)),
        (utc(2026, 12, 31, 23, 59, 59, 999999), "2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
        (utc(2024, 2, 29, 23, 59, 59), "2024-02", utc(2024, 2, 1), utc(2024, 3, 1)),
    ],
)
def test_monthly_period_at_month_ends(
    moment: datetime, key: str, start: datetime, end: datetime
) -> None:
    period = period_containing("monthly", moment)
    assert period == Period(name="monthly", key=key, start=start, end=end)


@pytest.mark.parametrize(
    ("year", "february_days", "year_days"),
    [(2024, 29, 366), (2025, 28, 365), (2000, 29, 366), (2100, 28, 365), (1900, 28, 365)],
)
def test_leap_years(year: int, february_days: int, year_days: int) -> None:
    february = period_containing("monthly", utc(year, 2, 10))
    assert february.length_seconds == february_days * DAY
    assert iso(february.end) == f"{year}-03-01T00:00:00Z"
    assert period_containing("yearly", utc(year, 6, 1)).length_seconds == year_days * DAY

    last_of_february = period_containing("daily", utc(year, 2, 28, 12))
    after = next_period(last_of_february)
    assert after.key == (f"{year}-02-29" if february_days == 29 else f"{year}-03-01")


def test_leap_day_is_its_own_day() -> None:
    period = period_containing("daily", utc(2024, 2, 29, 13, 37))
    assert period.key == "2024-02-29"
    assert (iso(period.start), iso(period.end)) == ("2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z")


@pytest.mark.parametrize(
    ("name", "before_key", "after_key"),
    [
        ("daily", "2026-12-31", "2027-01-01"),
        ("weekly", "2026-W53", "2026-W53"),  # Fri 2027-01-01 is still in ISO week 2026-W53
        ("monthly", "2026-12", "2027-01"),
        ("yearly", "2026", "2027"),
    ],
)
def test_year_boundary(name: str, before_key: str, after_key: str) -> None:
    last = utc(2026, 12, 31, 23, 59, 59, 999999)
    assert period_containing(name, last).key == before_key
    assert period_containing(name, last + US).key == after_key


def test_year_boundary_daily_and_yearly_bounds() -> None:
    new_year = utc(2027, 1, 1)
    day = period_containing("daily", new_year - US)
    assert iso(day.end) == "2027-01-01T00:00:00Z"
    year = period_containing("yearly", new_year)
    assert (year.key, iso(year.start), iso(year.end)) == (
        "2027",
        "2027-01-01T00:00:00Z",
        "2028-01-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("moment", "key", "monday"),
    [
        (utc(2026, 1, 1), "2026-W01", utc(2025, 12, 29)),  # Thursday: week 1 starts in 2025
        (utc(2024, 12, 30), "2025-W01", utc(2024, 12, 30)),  # a December Monday in week 1
        (utc(2025, 1, 1), "2025-W01", utc(2024, 12, 30)),
        (utc(2021, 1, 3, 23, 59, 59), "2020-W53", utc(2020, 12, 28)),  # Sunday in last year's W53
        (utc(2021, 1, 4), "2021-W01", utc(2021, 1, 4)),
        (utc(2026, 12, 31), "2026-W53", utc(2026, 12, 28)),
        (utc(2027, 1, 3, 12), "2026-W53", utc(2026, 12, 28)),
        (utc(2027, 1, 4), "2027-W01", utc(2027, 1, 4)),
        (utc(2026, 3, 14), "2026-W11", utc(2026, 3, 9)),
    ],
)
def test_iso_week_keys_at_year_edges(moment: datetime, key: str, monday: datetime) -> None:
    period = period_containing("weekly", moment)
    assert period.key == key
    assert period.start == monday
    assert period.end == monday + timedelta(days=7)
    assert period.start.weekday() == 0


def test_keys_formats() -> None:
    moment = utc(2026, 3, 14, 15, 9, 26)
    assert period_containing("daily", moment).key == "2026-03-14"
    assert period_containing("weekly", moment).key == "2026-W11"
    assert period_containing("monthly", moment).key == "2026-03"
    assert period_containing("yearly", moment).key == "2026"


# --- half-open boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "boundary", "key_at", "key_before"),
    [
        ("daily", utc(2026, 3, 15), "2026-03-15", "2026-03-14"),
        ("weekly", utc(2026, 3, 16), "2026-W12", "2026-W11"),
        ("monthly", utc(2026, 3, 1), "2026-03", "2026-02"),
        ("yearly", utc(2026, 1, 1), "2026", "2025"),
    ],
)
def test_moment_on_boundary_belongs_to_the_period_starting_there(
    name: str, boundary: datetime, key_at: str, key_before: str
) -> None:
    at = period_containing(name, boundary)
    before = period_containing(name, boundary - US)
    assert (at.key, at.start) == (key_at, boundary)
    assert (before.key, before.end) == (key_before, boundary)
    assert at.contains(boundary)
    assert not before.contains(boundary)
    assert before.contains(boundary - US)
    assert not at.contains(boundary - US)


# --- time zones and DST --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "start", "end", "hours"),
    [
        # Europe/Berlin: spring forward 02:00 -> 03:00 on 2026-03-29, fall back on 2026-10-25.
        ("Europe/Berlin", "2026-03-28", "2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", 24),
        ("Europe/Berlin", "2026-03-29", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
        ("Europe/Berlin", "2026-03-30", "2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z", 24),
        ("Europe/Berlin", "2026-10-25", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
        # America/New_York: 2026-03-08 and 2026-11-01.
        ("America/New_York", "2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23),
        ("America/New_York", "2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25),
        ("America/New_York", "2026-11-02", "2026-11-02T05:00:00Z", "2026-11-03T05:00:00Z", 24),
    ],
)
def test_daily_periods_across_dst(tz: str, day: str, start: str, end: str, hours: int) -> None:
    zone = ZoneInfo(tz)
    # Noon local is unambiguous on every one of these days.
    noon = datetime.fromisoformat(f"{day}T12:00").replace(tzinfo=zone)
    period = period_containing("daily", noon, tz=tz)
    assert period.key == day
    assert (iso(period.start), iso(period.end)) == (start, end)
    assert period.length_seconds == hours * HOUR
    # Both boundaries are local midnight.
    assert period.start.astimezone(zone).time().isoformat() == "00:00:00"
    assert period.end is not None
    assert period.end.astimezone(zone).time().isoformat() == "00:00:00"


def test_late_evening_local_is_the_local_day_not_the_utc_day() -> None:
    # 23:30 in New York on 2026-11-01 is already 2026-11-02 in UTC.
    moment = datetime(2026, 11, 1, 23, 30, tzinfo=NEW_YORK)
    assert period_containing("daily", moment, tz="America/New_York").key == "2026-11-01"
    assert period_containing("daily", moment).key == "2026-11-02"


def test_dst_weeks_and_months_in_berlin() -> None:
    week = period_containing("weekly", utc(2026, 3, 25), tz=BERLIN)
    assert week.key == "2026-W13"
    assert (iso(week.start), iso(week.end)) == ("2026-03-22T23:00:00Z", "2026-03-29T22:00:00Z")
    assert week.length_seconds == 7 * DAY - HOUR

    march = period_containing("monthly", utc(2026, 3, 15), tz=BERLIN)
    assert (iso(march.start), iso(march.end)) == ("2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z")
    assert march.length_seconds == 31 * DAY - HOUR

    october = period_containing("monthly", utc(2026, 10, 15), tz=BERLIN)
    assert october.length_seconds == 31 * DAY + HOUR


@pytest.mark.parametrize(
    ("tz", "moment", "key", "start", "end"),
    [
        # Already March in Tokyo (+09:00) while still February in UTC.
        (
            "Asia/Tokyo",
            utc(2026, 2, 28, 15, 30),
            "2026-03",
            "2026-02-28T15:00:00Z",
            "2026-03-31T15:00:00Z",
        ),
        (
            "Asia/Tokyo",
            utc(2026, 2, 28, 14, 59, 59),
            "2026-02",
            "2026-01-31T15:00:00Z",
            "2026-02-28T15:00:00Z",
        ),
        # Half-hour offset zone.
        (
            "Asia/Kolkata",
            utc(2026, 6, 10),
            "2026-06",
            "2026-05-31T18:30:00Z",
            "2026-06-30T18:30:00Z",
        ),
        # Still October in Los Angeles; November starts in PDT and ends in PST.
        (
            "America/Los_Angeles",
            utc(2026, 11, 1, 6, 59),
            "2026-10",
            "2026-10-01T07:00:00Z",
            "2026-11-01T07:00:00Z",
        ),
        (
            "America/Los_Angeles",
            utc(2026, 11, 1, 7),
            "2026-11",
            "2026-11-01T07:00:00Z",
            "2026-12-01T08:00:00Z",
        ),
    ],
)
def test_monthly_start_in_non_utc_zone_is_converted_to_utc(
    tz: str, moment: datetime, key: str, start: str, end: str
) -> None:
    period = period_containing("monthly", moment, tz=tz)
    assert period.key == key
    assert (iso(period.start), iso(period.end)) == (start, end)
    assert period.start.tzinfo is UTC
    assert period.end is not None
    assert period.end.tzinfo is UTC


@pytest.mark.parametrize(
    "tz", [ZoneInfo("Asia/Kolkata"), timezone(timedelta(hours=5, minutes=30)), "Asia/Kolkata"]
)
def test_tz_accepts_names_and_tzinfo_objects(tz: str | tzinfo) -> None:
    period = period_containing("yearly", utc(2026, 5, 5), tz=tz)
    assert (iso(period.start), iso(period.end)) == ("2025-12-31T18:30:00Z", "2026-12-31T18:30:00Z")


def test_unknown_zone_name_raises() -> None:
    with pytest.raises(KeyError, match="Mars/Olympus_Mons"):
        period_containing("daily", utc(2026, 1, 1), tz="Mars/Olympus_Mons")


# --- nonexistent and ambiguous local midnights ---------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "start", "end", "hours"),
    [
        # Havana springs forward at 00:00 -> 01:00: the day starts at the transition (01:00 CDT).
        ("America/Havana", "2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23),
        ("America/Havana", "2026-03-07", "2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z", 24),
        # Havana falls back 01:00 -> 00:00: midnight happens twice, the day starts at the first.
        ("America/Havana", "2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25),
        # Beirut skips 00:00 on 2026-03-29 (00:00 -> 01:00 EEST).
        ("Asia/Beirut", "2026-03-29", "2026-03-28T22:00:00Z", "2026-03-29T21:00:00Z", 23),
        # Santiago skips 00:00 on 2026-09-06 and repeats 23:00 on 2026-04-04.
        ("America/Santiago", "2026-09-06", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z", 23),
        ("America/Santiago", "2026-04-04", "2026-04-04T03:00:00Z", "2026-04-05T04:00:00Z", 25),
    ],
)
def test_nonexistent_and_ambiguous_local_midnight(
    tz: str, day: str, start: str, end: str, hours: int
) -> None:
    noon = datetime.fromisoformat(f"{day}T12:00").replace(tzinfo=ZoneInfo(tz))
    period = period_containing("daily", noon, tz=tz)
    assert period.key == day
    assert (iso(period.start), iso(period.end)) == (start, end)
    assert period.length_seconds == hours * HOUR
    # The neighbours meet it exactly: no gap, no overlap at the odd midnight.
    assert previous_period(period, tz=tz).end == period.start
    assert next_period(period, tz=tz).start == period.end


def test_skipped_calendar_day_samoa() -> None:
    # Pacific/Apia jumped from 2011-12-29 24:00 (-10:00) to 2011-12-31 00:00 (+14:00).
    tz = "Pacific/Apia"
    thursday = period_containing("daily", utc(2011, 12, 30, 9), tz=tz)
    assert thursday.key == "2011-12-29"
    assert (iso(thursday.start), iso(thursday.end)) == (
        "2011-12-29T10:00:00Z",
        "2011-12-30T10:00:00Z",
    )
    saturday = next_period(thursday, tz=tz)
    assert saturday.key == "2011-12-31"
    assert iso(saturday.start) == "2011-12-30T10:00:00Z"
    december = period_containing("monthly", utc(2011, 12, 15), tz=tz)
    assert december.length_seconds == 30 * DAY


# --- billing_monthly -----------------------------------------------------------------------------

_COMMON_YEAR = {
    29: ["01-29", "02-28", "03-29", "04-29", "05-29", "06-29", "07-29", "08-29", "09-29",
         "10-29", "11-29", "12-29"],
    30: ["01-30", "02-28", "03-30", "04-30", "05-30", "06-30", "07-30", "08-30", "09-30",
         "10-30", "11-30", "12-30"],
    31: ["01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30",
         "10-31", "11-30", "12-31"],
}  # fmt: skip


@pytest.mark.parametrize("year", [2025, 2024, 2100])
@pytest.mark.parametrize("anchor_day", [29, 30, 31])
def test_billing_monthly_anchor_days_across_a_year(year: int, anchor_day: int) -> None:
    anchor = utc(year, 1, anchor_day, 10, 15)
    leap = year == 2024
    expected = [
        "02-29" if leap and month_day == "02-28" else month_day
        for month_day in _COMMON_YEAR[anchor_day]
    ]
    expected.append(f"01-{anchor_day}")  # the first boundary of the following year

    period = current_period("billing_monthly", now=anchor, anchor=anchor)
    starts = [period.start]
    keys = [period.key]
    for _ in range(12):
        period = next_period(period, anchor=anchor)
        starts.append(period.start)
        keys.append(period.key)

    assert [iso(start) for start in starts] == [
        f"{year + (index == 12)}-{month_day}T10:15:00Z" for index, month_day in enumerate(expected)
    ]
    assert keys == [f"{year}-{month:02d}" for month in range(1, 13)] + [f"{year + 1}-01"]


def test_billing_monthly_never_drifts_after_a_short_month() -> None:
    anchor = utc(2026, 1, 31)
    february = period_containing("billing_monthly", utc(2026, 3, 1), anchor=anchor)
    assert (february.key, iso(february.start), iso(february.end)) == (
        "2026-02",
        "2026-02-28T00:00:00Z",
        "2026-03-31T00:00:00Z",
    )
    # Far from the anchor the day is still clamped from the anchor, not from a previous boundary.
    later = period_containing("billing_monthly", utc(2031, 5, 1), anchor=anchor)
    assert (later.key, iso(later.start), iso(later.end)) == (
        "2031-04",
        "2031-04-30T00:00:00Z",
        "2031-05-31T00:00:00Z",
    )


def test_billing_monthly_preserves_local_time_of_day_across_dst() -> None:
    anchor = datetime(2026, 1, 15, 10, 0, 0, 250000, tzinfo=BERLIN)
    period = period_containing("billing_monthly", anchor, tz=BERLIN, anchor=anchor)
    starts = []
    for _ in range(12):
        starts.append(period.start)
        period = next_period(period, tz=BERLIN, anchor=anchor)

    # 10:00 CET is 09:00Z, 10:00 CEST is 08:00Z.
    assert [iso(start) for start in starts] == [
        "2026-01-15T09:00:00.250000Z",
        "2026-02-15T09:00:00.250000Z",
        "2026-03-15T09:00:00.250000Z",
        "2026-04-15T08:00:00.250000Z",
        "2026-05-15T08:00:00.250000Z",
        "2026-06-15T08:00:00.250000Z",
        "2026-07-15T08:00:00.250000Z",
        "2026-08-15T08:00:00.250000Z",
        "2026-09-15T08:00:00.250000Z",
        "2026-10-15T08:00:00.250000Z",
        "2026-11-15T09:00:00.250000Z",
        "2026-12-15T09:00:00.250000Z",
    ]
    assert {start.astimezone(BERLIN).time().isoformat() for start in starts} == {"10:00:00.250000"}


def test_billing_monthly_with_utc_zone_keeps_utc_time_not_local_time() -> None:
    # The same anchor computed in UTC keeps 09:00Z all year: tz decides whose wall clock is kept.
    anchor = datetime(2026, 1, 15, 10, tzinfo=BERLIN)
    july = period_containing("billing_monthly", utc(2026, 7, 20), anchor=anchor)
    assert iso(july.start) == "2026-07-15T09:00:00Z"


def test_billing_monthly_boundary_in_a_dst_gap_moves_to_the_transition() -> None:
    # 02:30 on 2026-03-29 does not exist in Berlin; that boundary becomes 03:00 CEST (01:00Z).
    anchor = datetime(2026, 1, 29, 2, 30, tzinfo=BERLIN)
    february = period_containing("billing_monthly", utc(2026, 3, 15), tz=BERLIN, anchor=anchor)
    assert iso(february.start) == "2026-02-28T01:30:00Z"
    assert february.end == utc(2026, 3, 29, 1)
    march = next_period(february, tz=BERLIN, anchor=anchor)
    assert (march.key, iso(march.end)) == ("2026-03", "2026-04-29T00:30:00Z")


@pytest.mark.parametrize(
    ("fold", "anchor_utc"), [(0, utc(2026, 10, 25, 0, 30)), (1, utc(2026, 10, 25, 1, 30))]
)
def test_billing_monthly_anchor_in_dst_overlap_is_a_boundary(
    fold: int, anchor_utc: datetime
) -> None:
    anchor = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=fold)
    # (== between zones is always False inside a fold, hence the explicit conversion.)
    assert anchor.astimezone(UTC) == anchor_utc
    period = period_containing("billing_monthly", anchor, tz=BERLIN, anchor=anchor)
    assert period.start == anchor_utc
    assert iso(period.end) == "2026-11-25T01:30:00Z"
    assert previous_period(period, tz=BERLIN, anchor=anchor).key == "2026-09"


@pytest.mark.parametrize(
    ("moment", "key", "start", "end"),
    [
        (utc(2026, 3, 31, 12), "2026-03", "2026-03-31T12:00:00Z", "2026-04-30T12:00:00Z"),
        (
            utc(2026, 3, 31, 11, 59, 59, 999999),
            "2026-02",
            "2026-02-28T12:00:00Z",
            "2026-03-31T12:00:00Z",
        ),
        (utc(2026, 3, 15), "2026-02", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z"),
        (utc(2026, 3, 1), "2026-02", "2026-02-28T12:00:00Z", "2026-03-31T12:00:00Z"),
        (utc(2025, 12, 31, 12), "2025-12", "2025-12-31T12:00:00Z", "2026-01-31T12:00:00Z"),
        (utc(2024, 3, 1), "2024-02", "2024-02-29T12:00:00Z", "2024-03-31T12:00:00Z"),
        (utc(2024, 2, 29, 11), "2024-01", "2024-01-31T12:00:00Z", "2024-02-29T12:00:00Z"),
        (utc(2019, 7, 4), "2019-06", "2019-06-30T12:00:00Z", "2019-07-31T12:00:00Z"),
        (utc(2026, 4, 30, 12), "2026-04", "2026-04-30T12:00:00Z", "2026-05-31T12:00:00Z"),
    ],
)
def test_billing_monthly_before_after_and_on_the_anchor(
    moment: datetime, key: str, start: str, end: str
) -> None:
    anchor = utc(2026, 3, 31, 12)
    period = period_containing("billing_monthly", moment, anchor=anchor)
    assert period.key == key
    assert (iso(period.start), iso(period.end)) == (start, end)
    assert period.contains(moment)


def test_billing_monthly_requires_an_aware_anchor() -> None:
    with pytest.raises(ValueError, match="requires an anchor"):
        period_containing("billing_monthly", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="anchor must be a timezone-aware"):
        period_containing("billing_monthly", utc(2026, 1, 1), anchor=datetime(2026, 1, 1))


def test_anchor_is_ignored_by_calendar_periods() -> None:
    anchor = utc(2026, 1, 17, 8)
    assert period_containing("monthly", utc(2026, 3, 5), anchor=anchor) == period_containing(
        "monthly", utc(2026, 3, 5)
    )


# --- chains ---------------------------------------------------------------------------------------

_CHAIN_CASES = [
    (name, tz) for name in PERIOD_NAMES for tz in ("UTC", "Europe/Berlin", "America/Havana")
]


@pytest.mark.parametrize(("name", "tz"), _CHAIN_CASES)
def test_400_consecutive_periods_have_no_gaps_or_overlaps(name: str, tz: str) -> None:
    anchor = datetime(2024, 1, 31, 0, 30, tzinfo=ZoneInfo(tz))
    first = period_containing(name, utc(2023, 11, 5, 3), tz=tz, anchor=anchor)
    chain = [first]
    for _ in range(399):
        chain.append(next_period(chain[-1], tz=tz, anchor=anchor))

    for earlier, later in itertools.pairwise(chain):
        assert later.start == earlier.end
        assert later.key > earlier.key  # zero-padded keys sort chronologically
    for period in chain:
        assert period.name == name
        assert period.end is not None
        assert period.start < period.end
        # Every instant inside maps back to this very period; the end maps to the next one.
        assert period_containing(name, period.start, tz=tz, anchor=anchor) == period
        last_instant = period.end - US
        assert period_containing(name, last_instant, tz=tz, anchor=anchor) == period
    assert len({period.key for period in chain}) == 400

    # Walking back reproduces the same periods.
    backwards = [chain[-1]]
    for _ in range(399):
        backwards.append(previous_period(backwards[-1], tz=tz, anchor=anchor))
    assert backwards[::-1] == chain


@pytest.mark.parametrize(
    ("name", "last_key"),
    [
        ("daily", "2024-12-08"),  # 2023-11-05 + 399 days
        ("weekly", "2031-W26"),  # Monday 2023-10-30 + 399 weeks
        ("monthly", "2057-02"),
        ("yearly", "2422"),
    ],
)
def test_chain_lands_on_the_expected_key(name: str, last_key: str) -> None:
    period = period_containing(name, utc(2023, 11, 5, 3))
    for _ in range(399):
        period = next_period(period)
    assert period.key == last_key


def test_next_period_with_a_different_tz_is_rejected() -> None:
    berlin_day = period_containing("daily", utc(2026, 6, 1, 12), tz=BERLIN)
    with pytest.raises(ValueError, match="not computed with this tz/anchor"):
        next_period(berlin_day, tz="UTC")
    with pytest.raises(ValueError, match="not computed with this tz/anchor"):
        previous_period(berlin_day, tz="UTC")


# --- seconds_until_end, length, ALL_TIME ---------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (utc(2026, 3, 1), 31 * DAY),
        (utc(2026, 3, 31, 23), HOUR),
        (utc(2026, 3, 31, 23, 59, 59), 1),
        (utc(2026, 3, 31, 23, 59, 59, 1), 1),  # rounded up, never 0 before the end
        (utc(2026, 3, 31, 23, 59, 58, 500000), 2),
        (utc(2026, 4, 1), 0),
        (utc(2026, 5, 1), 0),  # never negative
    ],
)
def test_seconds_until_end(now: datetime, seconds: int) -> None:
    march = period_containing("monthly", utc(2026, 3, 10))
    assert march.seconds_until_end(now) == seconds


def test_seconds_until_end_accepts_any_aware_zone() -> None:
    day = period_containing("daily", utc(2026, 3, 29, 12), tz=BERLIN)
    assert day.seconds_until_end(datetime(2026, 3, 29, 23, 0, tzinfo=BERLIN)) == HOUR


def test_all_time() -> None:
    assert ALL_TIME.name == "all_time"
    assert ALL_TIME.key == "all"
    assert iso(ALL_TIME.start) == "1970-01-01T00:00:00Z"
    assert ALL_TIME.end is None
    assert ALL_TIME.contains(utc(2026, 3, 14))
    assert ALL_TIME.contains(utc(9999, 12, 31))
    assert ALL_TIME.contains(utc(1970, 1, 1))
    assert not ALL_TIME.contains(utc(1969, 12, 31, 23, 59, 59, 999999))
    assert ALL_TIME.length_seconds is None
    assert ALL_TIME.seconds_until_end(utc(2026, 3, 14)) is None
    with pytest.raises(ValueError, match="open-ended"):
        next_period(ALL_TIME)
    with pytest.raises(ValueError, match="no previous period"):
        previous_period(ALL_TIME)


def test_period_is_immutable_and_hashable() -> None:
    period = period_containing("daily", utc(2026, 3, 14))
    with pytest.raises(AttributeError):
        period.key = "2026-03-15"  # type: ignore[misc]
    assert {period, period_containing("daily", utc(2026, 3, 14, 23))} == {period}


# --- current_period ------------------------------------------------------------------------------


def test_current_period_defaults_to_django_now(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.utils import timezone as django_timezone

    monkeypatch.setattr(django_timezone, "now", lambda: utc(2026, 12, 31, 23, 30))
    assert current_period("daily").key == "2026-12-31"
    assert current_period("daily", tz=BERLIN).key == "2027-01-01"
    assert current_period("weekly").key == "2026-W53"


def test_current_period_uses_explicit_now() -> None:
    period = current_period("monthly", now=utc(2024, 2, 29, 12), tz="America/New_York")
    assert (period.key, iso(period.start)) == ("2024-02", "2024-02-01T05:00:00Z")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: period_containing("daily", datetime(2026, 3, 14)),
        lambda: current_period("monthly", now=datetime(2026, 3, 14)),
        lambda: ALL_TIME.contains(datetime(2026, 3, 14)),
        lambda: ALL_TIME.seconds_until_end(datetime(2026, 3, 14)),
    ],
    ids=["period_containing", "current_period", "contains", "seconds_until_end"],
)
def test_naive_datetimes_are_rejected(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match="timezone-aware"):
        call()


def test_naive_django_now_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.utils import timezone as django_timezone

    monkeypatch.setattr(django_timezone, "now", lambda: datetime(2026, 3, 14))
    with pytest.raises(ValueError, match="timezone-aware"):
        current_period("daily")


@pytest.mark.parametrize("name", ["hourly", "Monthly", "month", "", "all_time"])
def test_unknown_period_names_raise(name: str) -> None:
    with pytest.raises(UnknownPeriod) as excinfo:
        period_containing(name, utc(2026, 3, 14))
    message = str(excinfo.value)
    assert repr(name) in message
    assert "daily, weekly, monthly, yearly, billing_monthly" in message
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(UnknownPeriod):
        current_period(name, now=utc(2026, 3, 14))


def test_period_names() -> None:
    assert PERIOD_NAMES == ("daily", "weekly", "monthly", "yearly", "billing_monthly")


def test_period_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="must be after start"):
        Period(name="daily", key="x", start=utc(2026, 1, 2), end=utc(2026, 1, 1))
