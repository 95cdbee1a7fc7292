"""Quota periods: the time windows in which metered usage is counted before it resets.

A :class:`Period` is a half-open interval ``[start, end)`` of aware UTC datetimes plus a stable
``key`` that identifies it (``"2026-03"``, ``"2026-W11"``, ...). Keying usage counters by period
lets resets happen lazily: nothing has to run at midnight, a new key simply starts a new counter.

Calendar periods (``daily``, ``weekly``, ``monthly``, ``yearly``) are computed on the wall clock
of a time zone and then converted to UTC, so a "day" in ``Europe/Berlin`` is 23 or 25 hours long
on DST change days. ``billing_monthly`` periods repeat every month from a subscription's anchor
datetime, with the day clamped to short months (Jan 31 -> Feb 28 -> Mar 31).

Wall-clock times that do not exist (a DST gap, e.g. ``America/Havana`` jumps from 00:00 straight
to 01:00 on its spring-forward day, and ``Pacific/Apia`` skipped 2011-12-30 entirely) resolve to
the first instant that does exist after them, i.e. the moment of the transition. Ambiguous
wall-clock times (a DST overlap) resolve to their first occurrence, so the day that starts with a
repeated midnight includes both passes through it.

This module is pure Python apart from :func:`django.utils.timezone.now` as the default clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.utils import timezone

__all__ = [
    "ALL_TIME",
    "PERIOD_NAMES",
    "Period",
    "UnknownPeriod",
    "current_period",
    "next_period",
    "period_containing",
    "previous_period",
]

PERIOD_NAMES: tuple[str, ...] = ("daily", "weekly", "monthly", "yearly", "billing_monthly")

_ALL_TIME_NAME = "all_time"
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_SECOND = timedelta(seconds=1)
_MICROSECONDS_PER_SECOND = 1_000_000

# The first estimate of a period's index comes from the local calendar date, which is exact
# except around pathological transitions (a zone falling back across midnight). A couple of
# corrective steps are therefore enough; the cap only exists so that a broken tzinfo cannot
# hang the caller in an endless loop.
_MAX_ADJUSTMENTS = 4


def _require_aware(value: datetime, what: str) -> None:
    # A naive datetime would silently be read as local server time by astimezone(); quota
    # boundaries must not depend on the host's TZ, so refuse instead of guessing.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} must be a timezone-aware datetime, got naive {value.isoformat()!r}; "
            "use django.utils.timezone.now() or attach a tzinfo."
        )


class UnknownPeriod(ValueError):
    """Raised when a period name is not one of :data:`PERIOD_NAMES`."""

    def __init__(self, name: str) -> None:
        self.name = name
        valid = ", ".join(PERIOD_NAMES)
        super().__init__(f"Unknown period {name!r}; expected one of: {valid}.")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time window ``[start, end)`` in UTC, identified by ``name`` and ``key``.

    ``end`` is ``None`` only for :data:`ALL_TIME`, the open-ended period used by allocation
    features that never reset.
    """

    name: str
    key: str
    start: datetime
    end: datetime | None

    def __post_init__(self) -> None:
        _require_aware(self.start, "Period.start")
        if self.end is not None:
            _require_aware(self.end, "Period.end")
            if self.end <= self.start:
                raise ValueError(f"Period.end ({self.end}) must be after start ({self.start}).")

    def contains(self, moment: datetime) -> bool:
        """Return whether ``moment`` (aware) lies in ``[start, end)``."""
        _require_aware(moment, "moment")
        return self.start <= moment and (self.end is None or moment < self.end)

    def seconds_until_end(self, now: datetime) -> int | None:
        """Whole seconds from ``now`` until ``end``, rounded up, never negative.

        Rounded up so that a client told to retry after this many seconds never retries while
        the period is still running. ``None`` for an open-ended period.
        """
        _require_aware(now, "now")
        if self.end is None:
            return None
        remaining = (self.end - now) // _ONE_MICROSECOND
        # Ceiling division on integers: floats would lose microseconds on long periods.
        return max(0, -(-remaining // _MICROSECONDS_PER_SECOND))

    @property
    def length_seconds(self) -> int | None:
        """Length of the period in whole seconds, or ``None`` when open-ended."""
        if self.end is None:
            return None
        return (self.end - self.start) // _ONE_SECOND


ALL_TIME: Period = Period(
    name=_ALL_TIME_NAME,
    key="all",
    start=datetime(1970, 1, 1, tzinfo=UTC),
    end=None,
)


def period_containing(
    name: str,
    moment: datetime,
    *,
    tz: str | tzinfo = "UTC",
    anchor: datetime | None = None,
) -> Period:
    """Return the period called ``name`` that contains the aware datetime ``moment``.

    Calendar periods follow the wall clock of ``tz`` (a zone name or a tzinfo). ``anchor`` is
    required for ``billing_monthly`` and ignored by the other periods. A moment exactly on a
    boundary belongs to the period that starts there.
    """
    _check_name(name)
    _require_aware(moment, "moment")
    # Compare in UTC: Python reports aware datetimes from different zones as unequal whenever
    # one of them sits in a DST fold (PEP 495), even if they denote the same instant.
    moment = moment.astimezone(UTC)
    zone = _zone(tz)
    anchor_local = _anchor_local(name, anchor, zone)

    index = _estimate_index(name, moment.astimezone(zone), anchor_local)
    period = _period_at(name, index, zone, anchor_local)
    for _ in range(_MAX_ADJUSTMENTS):
        if moment < period.start:
            index -= 1
        elif period.end is not None and moment >= period.end:
            index += 1
        else:
            return period
        period = _period_at(name, index, zone, anchor_local)
    raise RuntimeError(  # pragma: no cover - only reachable with an inconsistent tzinfo
        f"Could not find the {name} period containing {moment.isoformat()} in {zone}."
    )


def current_period(
    name: str,
    *,
    now: datetime | None = None,
    tz: str | tzinfo = "UTC",
    anchor: datetime | None = None,
) -> Period:
    """Return the period called ``name`` containing ``now`` (default: Django's ``timezone.now()``).

    With ``USE_TZ = False`` Django's clock is naive and this raises :class:`ValueError`.
    """
    moment = timezone.now() if now is None else now
    return period_containing(name, moment, tz=tz, anchor=anchor)


def next_period(
    period: Period,
    *,
    tz: str | tzinfo = "UTC",
    anchor: datetime | None = None,
) -> Period:
    """Return the period of the same kind that starts at ``period.end``.

    ``tz`` and ``anchor`` must be the ones ``period`` was computed with; a mismatch would leave
    a gap or an overlap, so it raises :class:`ValueError` instead.
    """
    if period.end is None:
        raise ValueError(f"The {period.name!r} period is open-ended and has no next period.")
    following = period_containing(period.name, period.end, tz=tz, anchor=anchor)
    if following.start != period.end:
        raise ValueError(
            f"Period {period.key!r} was not computed with this tz/anchor: the next period starts "
            f"at {following.start.isoformat()}, not at its end {period.end.isoformat()}."
        )
    return following


def previous_period(
    period: Period,
    *,
    tz: str | tzinfo = "UTC",
    anchor: datetime | None = None,
) -> Period:
    """Return the period of the same kind that ends at ``period.start``.

    ``tz`` and ``anchor`` must be the ones ``period`` was computed with (checked, as in
    :func:`next_period`).
    """
    if period.name == _ALL_TIME_NAME:
        raise ValueError(f"The {period.name!r} period has no previous period.")
    preceding = period_containing(
        period.name, period.start - _ONE_MICROSECOND, tz=tz, anchor=anchor
    )
    if preceding.end != period.start:
        raise ValueError(
            f"Period {period.key!r} was not computed with this tz/anchor: the previous period "
            f"does not end at its start {period.start.isoformat()}."
        )
    return preceding


# --- helpers -----------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in PERIOD_NAMES:
        raise UnknownPeriod(name)


def _zone(tz: str | tzinfo) -> tzinfo:
    # ZoneInfo caches instances per key, so constructing one per call is cheap.
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _anchor_local(name: str, anchor: datetime | None, zone: tzinfo) -> datetime | None:
    if name != "billing_monthly":
        return None
    if anchor is None:
        raise ValueError(
            "The 'billing_monthly' period requires an anchor (the subscription start)."
        )
    _require_aware(anchor, "anchor")
    return anchor.astimezone(zone)


def _wall_clock(moment: datetime, zone: tzinfo) -> datetime:
    """The naive local wall-clock time of an aware ``moment`` in ``zone``."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _resolve_wall_time(wall: datetime, zone: tzinfo, *, fold: int = 0) -> datetime:
    """Convert the naive wall-clock time ``wall`` in ``zone`` to an aware UTC datetime.

    ``fold`` picks the occurrence of an ambiguous time (0: the first, which is the one that makes
    a day start at its earliest midnight). A time that does not exist (DST gap) resolves to the
    first existing instant after it: the transition itself.
    """
    candidate = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    if _wall_clock(candidate, zone) == wall:
        return candidate

    # A gap. PEP 495 maps a missing time with the offsets from before and after the transition,
    # giving two instants that bracket it: one whose wall clock is still before ``wall`` and one
    # already past it. zoneinfo does not expose transition instants, so binary-search between
    # them (about 40 steps even for Apia's 24-hour gap; gaps are rare, so this is cold code).
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    if not _wall_clock(low, zone) < wall <= _wall_clock(high, zone):
        # Not a PEP 495 gap as we know it (some exotic tzinfo); keep the standard conversion.
        return candidate
    low_offset, high_offset = 0, (high - low) // _ONE_MICROSECOND
    while high_offset - low_offset > 1:
        middle = (low_offset + high_offset) // 2
        if _wall_clock(low + middle * _ONE_MICROSECOND, zone) >= wall:
            high_offset = middle
        else:
            low_offset = middle
    return low + high_offset * _ONE_MICROSECOND


def _days_in_month(year: int, month: int) -> int:
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (following - date(year, month, 1)).days


# Each period kind is numbered by an integer index so that neighbours are simply index +/- 1:
#   daily:           proleptic Gregorian ordinal of the local date
#   weekly:          number of whole weeks since 0001-01-01 (which is a Monday)
#   monthly:         year * 12 + (month - 1)
#   yearly:          the year
#   billing_monthly: months since the anchor (negative before it)


def _estimate_index(name: str, local: datetime, anchor_local: datetime | None) -> int:
    """The index of the period whose local calendar span contains the wall time ``local``."""
    if name == "daily":
        return local.toordinal()
    if name == "weekly":
        return (local.toordinal() - 1) // 7
    if name == "monthly":
        return local.year * 12 + local.month - 1
    if name == "yearly":
        return local.year
    assert anchor_local is not None
    # Month difference only; the caller's adjustment step fixes the +/-1 when ``local`` falls
    # in the same calendar month as a boundary but before it (or after it).
    return (local.year - anchor_local.year) * 12 + (local.month - anchor_local.month)


def _wall_start(name: str, index: int, anchor_local: datetime | None) -> tuple[datetime, str]:
    """The naive local wall-clock start of period ``index`` and its key."""
    if name == "daily":
        local_date = date.fromordinal(index)
        return datetime.combine(local_date, time()), local_date.isoformat()
    if name == "weekly":
        monday = date.fromordinal(index * 7 + 1)
        # The ISO year of a week is the year of its Thursday, which is also the ISO year of
        # its Monday; isocalendar() gets 2026-12-31 -> 2026-W53 and 2024-12-30 -> 2025-W01 right.
        iso_year, iso_week, _ = monday.isocalendar()
        return datetime.combine(monday, time()), f"{iso_year:04d}-W{iso_week:02d}"
    if name == "monthly":
        year, month_zero = divmod(index, 12)
        return datetime(year, month_zero + 1, 1), f"{year:04d}-{month_zero + 1:02d}"
    if name == "yearly":
        return datetime(index, 1, 1), f"{index:04d}"
    assert anchor_local is not None
    # Always count from the anchor, never from the previous boundary: stepping Jan 31 -> Feb 28
    # -> Mar 28 would drift, whereas anchor + N months clamps each month independently.
    year, month_zero = divmod(anchor_local.year * 12 + anchor_local.month - 1 + index, 12)
    month = month_zero + 1
    day = min(anchor_local.day, _days_in_month(year, month))
    wall = datetime.combine(date(year, month, day), anchor_local.time())
    # Successive boundaries fall in successive months, so the month alone is a unique key.
    return wall, f"{year:04d}-{month:02d}"


def _period_at(name: str, index: int, zone: tzinfo, anchor_local: datetime | None) -> Period:
    wall_start, key = _wall_start(name, index, anchor_local)
    wall_end, _ = _wall_start(name, index + 1, anchor_local)
    # Billing boundaries reuse the anchor's fold, so that an anchor taken during a DST overlap
    # (e.g. the second 02:30 in Berlin) is itself exactly a boundary. Calendar periods start at
    # the first occurrence of midnight.
    fold = anchor_local.fold if anchor_local is not None else 0
    return Period(
        name=name,
        key=key,
        start=_resolve_wall_time(wall_start, zone, fold=fold),
        end=_resolve_wall_time(wall_end, zone, fold=fold),
    )
