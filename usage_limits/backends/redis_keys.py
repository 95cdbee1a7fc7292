"""How the Redis store names its keys, and how a counter's identity travels through Redis.

Every key of a tenant carries the tenant id as a hash tag (``uq:{42}:...``), so all of them live in
one Redis Cluster slot and one Lua script may touch them together:

* ``uq:{42}:api_calls:1772323200``: a counter (tenant 42, feature, period start as a Unix epoch);
* ``uq:{42}:dirty``: a hash of the tenant's counters changed since the flush last copied them,
  ``field -> change generation`` (plus ``#``, the tenant's generation sequence);
* ``uq:{42}:applied``: a hash of database differences already added to Redis,
  ``row id -> "baseline:row value"``, so a flush that crashed after adding one can run again
  without adding it twice;
* ``uq:{42}:day:api_calls:2026-03-14``: a daily history bucket, a hash of ``n`` (what Redis
  counted on that day) and ``t`` (a token naming this incarnation of the bucket: Redis time when
  it was created, so a bucket recreated after Redis lost its data is told apart from the one the
  database row last copied). Marked dirty as ``@api_calls|2026-03-14``, a field no counter can
  have (feature names are identifiers).

A dirty field holds everything the flush needs to write the database row without asking the
current rules (which may have changed since): feature, period start, period end and period key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from usage_limits.backends.base import CounterKey

FIELD_SEPARATOR = "|"
DIRTY_SEQUENCE_FIELD = "#"
DAY_FIELD_MARK = "@"


def epoch(moment: datetime) -> str:
    """Seconds since the Unix epoch, exact: ``1772323200`` or ``1772323200.000123``."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    seconds = delta.days * 86_400 + delta.seconds
    if delta.microseconds:
        return f"{seconds}.{delta.microseconds:06d}"
    return str(seconds)


def from_epoch(text: str) -> datetime:
    seconds, _dot, micros = text.partition(".")
    return datetime.fromtimestamp(int(seconds), tz=UTC).replace(microsecond=int(micros or 0))


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def counter(self, key: CounterKey) -> str:
        return f"{self.prefix}:{{{key.tenant_id}}}:{key.feature}:{epoch(key.period.start)}"

    def counter_for(self, tenant_id: int, field: DirtyField) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:{field.feature}:{field.start}"

    def day_bucket(self, tenant_id: int, feature: str, day: date) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:day:{feature}:{day.isoformat()}"

    def dirty(self, tenant_id: int) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:dirty"

    def rules(self, tenant_id: int) -> str:
        """A hash: ``v`` the tenant's rules version as the database has it, ``e`` an epoch that
        every change moves (see ``SET_RULES_VERSION``)."""
        return f"{self.prefix}:{{{tenant_id}}}:rules"

    def applied(self, tenant_id: int) -> str:
        return f"{self.prefix}:{{{tenant_id}}}:applied"

    def tenant_pattern(self, tenant_id: int) -> str:
        """Every key of one tenant (for SCAN MATCH)."""
        return f"{self.prefix}:{{{tenant_id}}}:*"

    @property
    def dirty_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:dirty"

    def tenant_of(self, redis_key: str) -> int:
        """The tenant id inside a key's hash tag."""
        return int(redis_key[redis_key.index("{") + 1 : redis_key.index("}")])


@dataclass(frozen=True, slots=True)
class DirtyField:
    """A counter's identity as stored in the tenant's dirty hash."""

    feature: str
    start: str  # epoch text, as in the counter key
    end: str  # epoch text, or "" for a counter that never resets
    period_key: str

    @classmethod
    def of(cls, key: CounterKey) -> DirtyField:
        return cls.of_row(key.feature, key.period.start, key.period.end, key.period.key)

    @classmethod
    def of_row(
        cls, feature: str, start: datetime, end: datetime | None, period_key: str
    ) -> DirtyField:
        return cls(feature, epoch(start), "" if end is None else epoch(end), period_key)

    @classmethod
    def parse(cls, text: str) -> DirtyField:
        feature, start, end, period_key = text.split(FIELD_SEPARATOR, 3)
        return cls(feature, start, end, period_key)

    def __str__(self) -> str:
        return FIELD_SEPARATOR.join((self.feature, self.start, self.end, self.period_key))

    @property
    def period_start(self) -> datetime:
        return from_epoch(self.start)

    @property
    def period_end(self) -> datetime | None:
        return from_epoch(self.end) if self.end else None


@dataclass(frozen=True, slots=True)
class DayField:
    """A daily history bucket's identity as stored in the tenant's dirty hash."""

    feature: str
    day: date

    @classmethod
    def parse(cls, text: str) -> DayField:
        feature, day = text[len(DAY_FIELD_MARK) :].split(FIELD_SEPARATOR, 1)
        return cls(feature, date.fromisoformat(day))

    @staticmethod
    def is_day_field(text: str) -> bool:
        return text.startswith(DAY_FIELD_MARK)

    def __str__(self) -> str:
        return f"{DAY_FIELD_MARK}{self.feature}{FIELD_SEPARATOR}{self.day.isoformat()}"
