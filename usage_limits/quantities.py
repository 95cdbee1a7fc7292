"""Validation of the quantities the engine is asked to count."""

from __future__ import annotations

import numbers
from typing import Any

from usage_limits.exceptions import InvalidQuantity

# The largest integer a JSON client (a JavaScript double) can hold exactly; far beyond any real
# usage, and far enough below 2**63 that a counter cannot overflow the BIGINT column.
MAX_QUANTITY = 2**53 - 1


def validate_quantity(quantity: Any, *, allow_zero: bool = False) -> int:
    """Return ``quantity`` as an ``int`` or raise :class:`InvalidQuantity` saying why."""
    if type(quantity) is int and 0 < quantity <= MAX_QUANTITY:
        return quantity  # the common case, without the slower ABC check below
    if isinstance(quantity, bool) or not isinstance(quantity, numbers.Integral):
        raise InvalidQuantity(f"Quantity must be a whole number, got {quantity!r}.")
    value = int(quantity)
    if value < 0 or (value == 0 and not allow_zero):
        floor = "zero or more" if allow_zero else "at least 1"
        raise InvalidQuantity(f"Quantity must be {floor}, got {value}.")
    if value > MAX_QUANTITY:
        raise InvalidQuantity(f"Quantity {value} is larger than the maximum of {MAX_QUANTITY}.")
    return value
