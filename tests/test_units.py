"""Human numbers: the edges of the ``humanize_usage`` filter."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.template import Context, Template

from usage_limits.units import humanize_bytes, humanize_count, humanize_quantity

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (999, "999"),
        (1000, "1K"),
        (1049, "1K"),
        (1099, "1K"),  # rounded down: never overstate usage
        (1100, "1.1K"),
        (1234, "1.2K"),
        (999_999, "999.9K"),  # not "1000.0K", not "1M"
        (1_000_000, "1M"),
        (3_400_000, "3.4M"),
        (999_999_999, "999.9M"),
        (1_000_000_000, "1B"),
        (1_100_000_000, "1.1B"),
        (1_000_000_000_000, "1T"),
        (-1234, "-1.2K"),
        (Decimal("1500.7"), "1.5K"),
        (12.9, "12"),
    ],
)
def test_counts(value: Any, expected: str) -> None:
    assert humanize_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, f"0{NBSP}bytes"),
        (1, f"1{NBSP}byte"),
        (1023, f"1023{NBSP}bytes"),
        (1024, f"1{NBSP}KB"),
        (1536, f"1.5{NBSP}KB"),
        (1024**2 - 1, f"1023.9{NBSP}KB"),
        (1024**2, f"1{NBSP}MB"),
        (int(2.5 * 1024**2), f"2.5{NBSP}MB"),
        (1024**3, f"1{NBSP}GB"),
        (95 * 1024**3, f"95{NBSP}GB"),
        (1024**4, f"1{NBSP}TB"),
    ],
)
def test_bytes(value: int, expected: str) -> None:
    assert humanize_bytes(value) == expected


@pytest.mark.parametrize("value", ["lots", None, True, float("nan"), float("inf")])
def test_what_is_not_a_number_is_shown_as_it_is(value: Any) -> None:
    assert humanize_count(value) == str(value)


def test_none_is_an_unlimited_limit() -> None:
    assert humanize_quantity(None) == "Unlimited"


def test_a_feature_that_counts_bytes_is_shown_as_a_size(settings: Any) -> None:
    settings.USAGE_LIMITS = {
        **settings.USAGE_LIMITS,
        "FEATURES": {
            **settings.USAGE_LIMITS["FEATURES"],
            "storage": {"kind": "allocation", "label": "Storage", "unit": "bytes"},
        },
    }
    assert humanize_quantity(5 * 1024**3, "storage") == f"5{NBSP}GB"
    assert humanize_quantity(5 * 1024**3, "api_calls") == "5.3B"


def test_the_filter() -> None:
    template = Template(
        "{% load usage_limits %}{{ calls|humanize_usage }} · {{ size|humanize_usage:'bytes' }}"
    )
    rendered = template.render(Context({"calls": 3_400_000, "size": 1536}))
    assert rendered == f"3.4M · 1.5{NBSP}KB"
