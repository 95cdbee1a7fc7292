"""Ids and counts typed by people are ASCII digits, parsed in one place (usage_limits.numbers)."""

from __future__ import annotations

import pytest

from usage_limits.numbers import primary_key, whole_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("0042", 42),
        ("999999999999999999", 999_999_999_999_999_999),
        ("9999999999999999999", None),  # 19 digits: no 64-bit primary key
        ("\u00b2", None),  # superscript two: isdigit(), and int() refuses it
        ("\u2460", None),  # circled one
        ("\u0663", None),  # Arabic-Indic three: int() would read 3
        ("\uff11", None),  # fullwidth one
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("", None),
        (None, None),
        (7, 7),
        (True, None),
    ],
)
def test_primary_keys_are_ascii_digits_that_fit_64_bits(text: object, expected: int | None) -> None:
    assert primary_key(text) == expected


def test_a_count_is_bounded() -> None:
    assert whole_number("100", 100) == 100
    assert whole_number("101", 100) is None
    assert whole_number("9" * 400, 100) is None  # refused before int() reads 400 digits
