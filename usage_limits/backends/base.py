"""The contract every counter store keeps.

A store owns the counters and nothing else: it knows no plans, tenants or signals. Each method is
one atomic operation in the store (one conditional statement, one Lua script); the engine never
reads a counter, compares in Python and writes it back.

Daily history (``USAGE_LIMITS["HISTORY"]``, on by default)
-----------------------------------------------------------
While history is on, a store also keeps one bucket per tenant, feature and day
(:class:`~usage_limits.models.UsageDailyBucket`) that the history chart reads. The rules every
store keeps, whatever it is built on:

* ``consume`` that applies, and ``increment``, add ``quantity`` to the bucket of
  ``(key.tenant_id, key.feature, usage_day())`` in the same atomic unit as the counter change
  (the same statement or transaction, the same Lua script). A denied ``consume`` writes nothing.
* ``refund`` subtracts what it actually gave back (``before - after``) from today's bucket, never
  below zero; with no bucket for today it writes nothing (the usage was on an earlier day).
* ``set`` and ``reset`` write no bucket: assigning a level or starting a counter again is not
  usage, and a reset must not erase history.
* The day is :func:`usage_day`: today's date in ``USAGE_LIMITS["TIME_ZONE"]``, the zone periods
  are computed in, so a day never straddles two calendar periods.
* Buckets are read through :meth:`UsageStore.daily_usage`. The default reads the database table;
  a store that keeps buckets elsewhere (in Redis until a flush) overrides it.

With history off, stores write no bucket and :meth:`UsageStore.daily_usage` keeps answering with
what was recorded before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from django.utils import timezone

from usage_limits.conf import conf
from usage_limits.periods import Period


def usage_day(now: datetime | None = None) -> date:
    """The day a change made at ``now`` is counted on: a date in ``USAGE_LIMITS["TIME_ZONE"]``."""
    return timezone.localdate(now or timezone.now(), timezone=ZoneInfo(conf.TIME_ZONE))


@dataclass(frozen=True, slots=True)
class CounterKey:
    tenant_id: int
    feature: str
    period: Period


@dataclass(frozen=True, slots=True)
class CounterChange:
    """What one atomic operation did: whether it applied, and the value before and after it."""

    applied: bool
    before: int
    after: int
    # True when the change was made where a rollback of the caller's database transaction does
    # not reach (the Redis store): the engine then takes it back itself if that transaction fails
    # (see UsageStore.undo).
    outside_transaction: bool = False


class UsageStore(ABC):
    """A place where usage counters live (the database by default, or Redis)."""

    # Whether a count lives in the caller's database transaction (rolled back with it). A store
    # that counts elsewhere (Redis) makes a batch claim its idempotency keys before counting.
    counts_in_transaction = True

    @abstractmethod
    def consume(
        self, key: CounterKey, quantity: int, limit: int | None, *, rules_version: int | None = None
    ) -> CounterChange:
        """Add ``quantity`` only if the result stays within ``limit`` (``None``: unlimited).

        Denied means nothing was added; ``before == after`` is then the current value. With a
        ``rules_version``, the same atomic step first checks that it is still the tenant's (the
        limit was read with it) and otherwise raises
        :class:`~usage_limits.exceptions.StaleRules`, adding nothing.
        """

    @abstractmethod
    def increment(
        self, key: CounterKey, quantity: int, *, rules_version: int | None = None
    ) -> CounterChange:
        """Add ``quantity`` unconditionally (usage recorded after the fact may run over); the
        ``rules_version`` is checked as by :meth:`consume` (the period was read with it)."""

    def rules_changed(self, tenant_ids: list[int]) -> None:
        """The ``rules_version`` of these tenants moved and the change committed.

        Stores that keep a copy of the version (Redis) drop it here; the database store reads
        the row itself.
        """
        return None

    @abstractmethod
    def refund(self, key: CounterKey, quantity: int) -> CounterChange:
        """Take back up to ``quantity``; the counter never goes below zero."""

    @abstractmethod
    def set(self, key: CounterKey, value: int) -> CounterChange:
        """Set the counter to ``value`` (allocations such as seats, corrections)."""

    @abstractmethod
    def reset(self, key: CounterKey) -> CounterChange:
        """Set the counter to zero, returning what it read before."""

    @abstractmethod
    def get(self, key: CounterKey) -> int:
        """The current value (0 when the counter was never written)."""

    def undo(self, key: CounterKey, change: CounterChange) -> None:
        """Take back ``change`` after the database transaction it belonged to rolled back.

        The engine counts under an idempotency key, for a billed feature or in a batch inside a
        database transaction with the ledger rows; if that transaction fails, a change that it
        did not carry (``change.outside_transaction``) must not stay counted, or a retry with the
        same key would count twice. Stores whose changes live in the database transaction have
        nothing to do: the rollback undid them.
        """
        return None

    def get_many(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        """Current values of several counters; stores override this with one round trip."""
        return {key: self.get(key) for key in keys}

    def daily_usage(self, tenant_id: int, feature: str, first: date, last: date) -> dict[date, int]:
        """Usage per day from ``first`` to ``last`` (inclusive); days without usage are absent.

        One query whatever the range, through the bucket table's unique index.
        """
        from usage_limits.models import UsageDailyBucket

        rows = UsageDailyBucket.objects.using(conf.DATABASE_ALIAS).filter(
            tenant_id=tenant_id, feature=feature, day__range=(first, last)
        )
        return {day: int(used) for day, used in rows.values_list("day", "used") if used}
