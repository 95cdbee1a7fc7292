"""Meter levels at their exact edges, decided in Python (never in a template)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from usage_limits.levels import Level
from usage_limits.meters import build_meter, display_quantity, time_until
from usage_limits.periods import period_containing
from usage_limits.results import FeatureUsage

NOW = dt.datetime(2026, 3, 22, 12, tzinfo=dt.UTC)
MARCH = period_containing("monthly", NOW)


def usage(used: int, limit: int | None, kind: str = "metered") -> FeatureUsage:
    return FeatureUsage(
        feature="api_calls",
        label="API calls",
        kind=kind,
        used=used,
        limit=limit,
        period=MARCH if kind == "metered" else None,
    )


@pytest.mark.parametrize(
    ("used", "limit", "level", "status", "percent_text", "valuenow"),
    [
        (0, 1000, Level.OK, "", "0%", 0),
        (599, 1000, Level.OK, "", "59%", 59),  # 59.9 %
        (600, 1000, Level.AMBER, "Nearing limit", "60%", 60),
        (849, 1000, Level.AMBER, "Nearing limit", "84%", 84),  # 84.9 %
        (850, 1000, Level.RED, "Almost used up", "85%", 85),
        (1000, 1000, Level.RED, "Limit reached", "100%", 100),
        (1200, 1000, Level.RED, "Over limit", "120%", 100),  # overage recorded after the fact
        (0, 0, Level.RED, "Limit reached", "100%", 100),  # a zero limit: nothing may be used
        (5_000_000, None, Level.OK, "", "", 0),  # unlimited
        (3, 1000, Level.OK, "", "<1%", 0),
    ],
)
def test_levels_at_their_edges(
    used: int, limit: int | None, level: Level, status: str, percent_text: str, valuenow: int
) -> None:
    meter = build_meter(usage(used, limit), now=NOW)
    assert meter.level is level
    assert meter.status == status
    assert meter.percent_text == percent_text
    assert meter.percent_shown == valuenow
    assert meter.unlimited is (limit is None)


def test_thresholds_come_from_settings(settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "METER_THRESHOLDS": {"amber": 50, "red": 75}}
    assert build_meter(usage(499, 1000), now=NOW).level is Level.OK
    assert build_meter(usage(500, 1000), now=NOW).level is Level.AMBER
    assert build_meter(usage(750, 1000), now=NOW).level is Level.RED


def test_the_text_alternative_says_everything_the_bar_shows() -> None:
    meter = build_meter(usage(8_500, 10_000), now=NOW)
    assert meter.value_text == "8,500 of 10,000 used (85%). Almost used up."
    assert meter.used_display == "8,500"
    assert meter.limit_display == "10K"
    assert meter.bar_width == "85"
    assert build_meter(usage(1, 3), now=NOW).bar_width == "33.3"


def test_metered_features_say_when_they_reset_and_allocations_do_not() -> None:
    assert build_meter(usage(1, 10), now=NOW).resets_in == "10 days"
    allocation = build_meter(usage(1, 10, kind="allocation"), now=NOW)
    assert allocation.resets_in == ""
    assert not allocation.resets


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (dt.timedelta(days=9), "9 days"),
        (dt.timedelta(days=8, hours=3), "9 days"),  # rounded up: never promise an early reset
        (dt.timedelta(days=1), "24 hours"),
        (dt.timedelta(hours=1, seconds=1), "2 hours"),
        (dt.timedelta(minutes=59), "59 minutes"),
        (dt.timedelta(seconds=20), "1 minute"),
        (dt.timedelta(seconds=-5), "1 minute"),
    ],
)
def test_time_until(delta: dt.timedelta, expected: str) -> None:
    assert time_until(NOW + delta, NOW) == expected


def test_display_quantity_is_exact_below_ten_thousand() -> None:
    assert display_quantity(9_999) == "9,999"
    assert display_quantity(10_000) == "10K"
    assert display_quantity(None) == "Unlimited"
    assert display_quantity(1536, "bytes") == "1.5\u00a0KB"
