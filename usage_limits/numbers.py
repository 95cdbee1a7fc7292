"""Whole numbers typed by people (a tenant id in a header, a page offset, webhook metadata).

``str.isdigit()`` is true for ``"²"``, ``"①"`` and Arabic-Indic digits, which ``int()`` then
refuses or reads as something else: every place that takes an id or a count from outside parses
it here, with one rule, ASCII digits only, and a bound that keeps it inside a 64-bit column.
"""

from __future__ import annotations

# Primary keys are 64-bit: a longer run of digits cannot name a row (and would overflow the
# database's integer type instead of simply matching nothing).
MAX_ID_DIGITS = 18


def whole_number(text: object, maximum: int) -> int | None:
    """``text`` as a whole number from 0 to ``maximum``, or ``None`` if it is not one."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        return None
    if len(text) > len(str(maximum)):
        return None
    value = int(text)
    return value if value <= maximum else None


def primary_key(text: object) -> int | None:
    """``text`` as a primary key (ASCII digits, at most 18 of them), or ``None``."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    return whole_number(text, 10**MAX_ID_DIGITS - 1)
