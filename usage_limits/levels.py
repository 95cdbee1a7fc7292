"""How full a counter is: percent used and the meter level (ok, amber, red).

Computed here, in Python, so templates, the API and the admin all agree on the edges
(59.9 % ok, 60 % amber, 84.9 % amber, 85 % red).
"""

from __future__ import annotations

from enum import StrEnum

from usage_limits.conf import conf


class Level(StrEnum):
    OK = "ok"
    AMBER = "amber"
    RED = "red"


def percent_used(used: int, limit: int | None) -> float:
    """Share of the limit used, in percent (may exceed 100 on overage); 0 when unlimited."""
    if limit is None:
        return 0.0
    if limit <= 0:
        return 100.0
    return used * 100.0 / limit


def usage_level(used: int, limit: int | None) -> Level:
    if limit is None:
        return Level.OK
    if limit <= 0:
        return Level.RED
    # Compare in integers (used * 100 >= amber * limit) so no float rounding moves an edge.
    scaled = used * 100
    if scaled >= conf.RED_PERCENT * limit:
        return Level.RED
    if scaled >= conf.AMBER_PERCENT * limit:
        return Level.AMBER
    return Level.OK
