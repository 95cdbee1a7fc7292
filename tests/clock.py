"""The test run's clock: real by default, or moved as a whole to an awkward instant.

``USAGE_LIMITS_TEST_CLOCK`` moves the clock of the whole run (and of the child processes it
spawns) with time-machine, ticking from there, so that a test which reads "now" without freezing
it fails on the dates where that matters instead of passing by the calendar's grace. It takes an
ISO 8601 instant, the name of one of the awkward instants below, or ``random`` (one of them,
picked per run; ``.ci/run`` does this and the report header says which). A test that needs "now"
freezes it itself, for the whole test, fixtures included (``@pytest.mark.frozen_clock``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import zoneinfo

import time_machine

ENV = "USAGE_LIMITS_TEST_CLOCK"
_ORIGIN_ENV = "USAGE_LIMITS_TEST_CLOCK_ORIGIN"  # the real Unix time the run moved at
_UTC = dt.UTC


def _next(when: dt.datetime, today: dt.datetime) -> dt.datetime:
    """``when`` in the first year from ``today`` on where it lies ahead (Redis expiries are
    absolute times: an instant in the past would expire the keys at once)."""
    year = today.year
    while True:
        try:
            candidate = when.replace(year=year)
        except ValueError:  # 29 February of a common year
            year += 1
            continue
        if candidate > today:
            return candidate
        year += 1


def _dst_change(today: dt.datetime, zone: str) -> dt.datetime:
    """Five seconds before the next daylight-saving change in ``zone``, found hour by hour."""
    tz = zoneinfo.ZoneInfo(zone)
    hour = today.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    offset = hour.astimezone(tz).utcoffset()
    while True:
        following = hour + dt.timedelta(hours=1)
        if following.astimezone(tz).utcoffset() != offset:
            return following - dt.timedelta(seconds=5)
        hour = following


def awkward_instants(today: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Named instants just before a boundary that periods, buckets and resets must cross."""
    today = today or dt.datetime.now(_UTC)
    return {
        "year-end": _next(dt.datetime(2000, 12, 31, 23, 59, 55, tzinfo=_UTC), today),
        "leap-day-end": _next(dt.datetime(2000, 2, 29, 23, 59, 56, tzinfo=_UTC), today),
        "january-end": _next(dt.datetime(2000, 1, 31, 23, 59, 57, tzinfo=_UTC), today),
        "april-end": _next(dt.datetime(2000, 4, 30, 23, 59, 58, tzinfo=_UTC), today),
        "month-start": _next(dt.datetime(2000, 3, 1, 0, 0, 1, tzinfo=_UTC), today),
        "dst-change-europe": _dst_change(today, "Europe/Berlin"),
        "dst-change-america": _dst_change(today, "America/New_York"),
    }


def moved_instant() -> tuple[str, dt.datetime] | None:
    """The instant ``USAGE_LIMITS_TEST_CLOCK`` names, with its name; ``None`` for the real clock."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    instants = awkward_instants()
    if value == "random":
        value = random.choice(sorted(instants))
    if value in instants:
        return value, instants[value]
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"{ENV}={value!r}: give a time zone (for example +00:00)")
    return value, when


def move_clock() -> tuple[str, dt.datetime] | None:
    """Move this process's clock to the instant the environment names, ticking from there.

    The first process writes the instant back to the environment as ISO 8601 with the real time
    it moved at, so that child processes (which call this too) land where the parent's clock is
    now, rather than at the start or on another random pick.
    """
    moved = moved_instant()
    if moved is None:
        return None
    name, when = moved
    real_now = time.time()
    origin = float(os.environ.setdefault(_ORIGIN_ENV, repr(real_now)))
    os.environ[ENV] = when.isoformat()
    time_machine.travel(when + dt.timedelta(seconds=real_now - origin), tick=True).start()
    return name, when
