"""Quantities for people: 1.2K, 3.4M, 1.1B, and bytes as KB / MB / GB.

A feature counts bytes when ``USAGE_LIMITS["FEATURES"]`` declares ``"unit": "bytes"`` for it.
Values are rounded *down* to one decimal, so a meter never shows a limit as reached (1M / 1M)
before it is: 999,999 reads 999.9K. Integer arithmetic keeps the edges exact.
"""

from __future__ import annotations

import math
import numbers
from decimal import Decimal
from typing import Any

from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from usage_limits.conf import conf

BYTES = "bytes"
UNITS = (BYTES,)

# (size, suffix): the first one a value reaches is used.
_COUNT_STEPS: tuple[tuple[int, str], ...] = (
    (10**12, "T"),
    (10**9, "B"),
    (10**6, "M"),
    (10**3, "K"),
)
_BYTE_STEPS: tuple[tuple[int, str], ...] = (
    (1024**5, "PB"),
    (1024**4, "TB"),
    (1024**3, "GB"),
    (1024**2, "MB"),
    (1024, "KB"),
)
# Between a number and its unit, so "1.5 GB" never breaks across lines.
NBSP = "\u00a0"


def feature_unit(feature: str) -> str:
    """The unit a feature declares (``"bytes"``), or ``""`` for plain counts."""
    declared = conf.FEATURES.get(feature, {})
    return str(declared.get("unit") or "")


def _scaled(magnitude: int, size: int) -> str:
    tenths = magnitude * 10 // size  # floor: never overstate usage
    whole, tenth = divmod(tenths, 10)
    if tenth:
        return number_format(Decimal(tenths) / 10, decimal_pos=1)
    return number_format(whole)


def _split(value: Any) -> tuple[str, int] | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | numbers.Integral):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    integral = int(value)  # quantities are whole; a Decimal quantity shows its whole part
    return ("-" if integral < 0 else ""), abs(integral)


def humanize_count(value: Any) -> str:
    """``1234`` -> ``"1.2K"``; ``3_400_000`` -> ``"3.4M"``; ``1_100_000_000`` -> ``"1.1B"``."""
    parts = _split(value)
    if parts is None:
        return str(value)
    sign, magnitude = parts
    for size, suffix in _COUNT_STEPS:
        if magnitude >= size:
            return f"{sign}{_scaled(magnitude, size)}{suffix}"
    return f"{sign}{magnitude}"


def humanize_bytes(value: Any) -> str:
    """``1536`` -> ``"1.5 KB"``; ``5 * 1024**3`` -> ``"5 GB"`` (binary multiples, as Django's
    ``filesizeformat``)."""
    parts = _split(value)
    if parts is None:
        return str(value)
    sign, magnitude = parts
    for size, suffix in _BYTE_STEPS:
        if magnitude >= size:
            return f"{sign}{_scaled(magnitude, size)}{NBSP}{suffix}"
    unit = ngettext("byte", "bytes", magnitude)
    return f"{sign}{magnitude}{NBSP}{unit}"


def humanize_quantity(value: Any, unit: str = "") -> str:
    """A count or a size, by ``unit`` (``"bytes"``) or by the unit a feature declares.

    ``None`` (an unlimited limit) reads "Unlimited".
    """
    if value is None:
        return _("Unlimited")
    if unit and unit not in UNITS:
        unit = feature_unit(unit)
    return humanize_bytes(value) if unit == BYTES else humanize_count(value)


def exact_quantity(value: int, unit: str = "") -> str:
    """The precise figure with thousands separators, for screen readers and tooltips."""
    grouped = number_format(value, force_grouping=True)
    if unit == BYTES:
        return f"{grouped}{NBSP}{ngettext('byte', 'bytes', value)}"
    return grouped
