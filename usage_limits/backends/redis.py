"""A counter store in Redis, with the database as the record (write-behind).

Enable it with ``USAGE_LIMITS = {"STORE": "usage_limits.backends.redis.RedisStore",
"REDIS_URL": "redis://..."}``; docs/scaling.md says when and what each setting guarantees.

* ``consume``, ``increment`` and ``refund`` are one call of a Lua script (EVALSHA) that checks,
  changes and marks the counter for the flush atomically, and returns the value before and after,
  so threshold signals fire exactly once as with the database store.
* A counter missing from Redis (first use of a period, or a Redis that lost its data) is seeded
  from its ``UsageRecord`` row, under that row's lock, before the script counts: a Redis restart
  does not give everyone a fresh quota.
* ``set`` and ``reset`` (allocations, operator resets) change Redis and the database row together,
  so the admin sees the new value at once and the audit row gets the value Redis held.
* Daily history (``USAGE_LIMITS["HISTORY"]``): the same script call adds a counted change to
  today's bucket in Redis (and takes a refund back from it), marked dirty like the counter.
* :mod:`usage_limits.backends.redis_flush` copies changed counters into ``UsageRecord`` and
  changed buckets into ``UsageDailyBucket``; :meth:`RedisStore.daily_usage` adds what Redis
  counted and the flush has not copied yet, so history pages are current.
* When Redis is unreachable, ``USAGE_LIMITS["REDIS_FAIL_MODE"]`` decides: ``"open"`` counts in the
  database (the rows are marked, and the flush later adds what they counted to Redis),
  ``"closed"`` raises :class:`~usage_limits.exceptions.StoreUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from datetime import time as day_start
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from redis import exceptions as redis_errors

from usage_limits.backends.base import CounterChange, CounterKey, UsageStore, usage_day
from usage_limits.backends.database import DatabaseStore
from usage_limits.backends.redis_client import (
    UNAVAILABLE,
    CircuitBreaker,
    OutageLog,
    connect,
    is_outage,
    run_batch,
)
from usage_limits.backends.redis_keys import DayField, DirtyField, RedisKeys
from usage_limits.backends.redis_scripts import (
    ASSIGN,
    CHANGE,
    DENIED,
    MISSING,
    READ_DAYS,
    RULES_CHANGED,
    SET_RULES_VERSION,
    STALE,
)
from usage_limits.conf import conf
from usage_limits.exceptions import InvalidQuantity, StaleRules, StoreUnavailable, UnknownTenant
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord
from usage_limits.periods import ALL_TIME, Period

logger = logging.getLogger("usage_limits")

T = TypeVar("T")

# Counters whose Redis names a process remembers; cleared when full (tenants x features x periods
# in use, so a busy process keeps its working set).
_NAMES_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class _CounterNames:
    counter: str
    dirty: str
    field: str
    expire_at: int | None
    history: bool  # a metered counter: its changes land in daily buckets (allocations keep none)
    # today's bucket, for ``day`` (rebuilt when the day changes)
    day: date | None = None
    bucket: str = ""
    bucket_field: str = ""


@dataclass(frozen=True, slots=True)
class _Today:
    """The usage day now, and the Unix times it starts and ends (computed once per day)."""

    zone: str
    day: date
    starts: float
    ends: float
    expire_at: float  # when its buckets may leave Redis (Unix time)


# Redis's reply when INCRBY/DECRBY would leave the 64-bit range (nothing was changed).
_OVERFLOW_REPLY = "increment or decrement would overflow"

# A count refused as STALE copies the database's version and runs again at most this often.
_RULES_ATTEMPTS = 3

# Even a counter whose period ended long ago lives this long once seeded, so a late write is
# still flushed rather than created already expired.
_MIN_TTL_SECONDS = 3600


class RedisStore(UsageStore):
    """Counters in Redis, copied into ``UsageRecord`` by the flush."""

    counts_in_transaction = False

    def __init__(self) -> None:
        self._names_cache: dict[CounterKey, _CounterNames] = {}
        self._today: _Today | None = None
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._connect_lock = threading.Lock()
        self.breaker = CircuitBreaker()
        self.outage_log = OutageLog()
        self.fallback = DatabaseStore()

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(conf.REDIS_KEY_PREFIX)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._connect_lock:
                if self._client is None:
                    client = connect()
                    self._scripts = {
                        "change": client.register_script(CHANGE),
                        "assign": client.register_script(ASSIGN),
                        "read_days": client.register_script(READ_DAYS),
                        "set_rules_version": client.register_script(SET_RULES_VERSION),
                        "rules_changed": client.register_script(RULES_CHANGED),
                    }
                    self._client = client
        return self._client

    def _script(self, name: str) -> Any:
        self.client  # noqa: B018  (connects and registers the scripts on first use)
        return self._scripts[name]

    def today(self) -> _Today:
        """The usage day (:func:`usage_day`), remembered until it ends: no zone maths per call."""
        zone = conf.TIME_ZONE
        now = time.time()
        today = self._today
        if today is None or today.zone != zone or not today.starts <= now < today.ends:
            day = usage_day()
            tz = ZoneInfo(zone)
            starts = datetime.combine(day, day_start.min, tzinfo=tz).timestamp()
            ends = datetime.combine(day + timedelta(days=1), day_start.min, tzinfo=tz).timestamp()
            today = self._today = _Today(
                zone=zone,
                day=day,
                starts=starts,
                ends=ends,
                expire_at=ends + conf.REDIS_EXPIRE_AFTER_PERIOD,
            )
        return today

    def _with_redis(self, operation: Callable[[], T], fallback: Callable[[], T], what: str) -> T:
        """Run ``operation`` against Redis; when Redis cannot answer, apply the fail mode."""
        error: Exception | None = None
        if self.breaker.allows_call():
            try:
                result = operation()
            except redis_errors.RedisError as exc:
                if not is_outage(exc):
                    if _OVERFLOW_REPLY in str(exc):
                        # INCRBY refuses to pass 2**63 - 1 and changes nothing: the same answer
                        # as the database store's guard, not a Redis error for the caller.
                        raise InvalidQuantity(
                            f"Counting would overflow the usage counter's maximum of "
                            f"{2**63 - 1} ({what}); nothing was counted."
                        ) from exc
                    raise
                self.breaker.record_failure()
                error = exc
            except UNAVAILABLE as exc:  # the built-in TimeoutError
                self.breaker.record_failure()
                error = exc
            else:
                self.breaker.record_success()
                return result
        return self._unavailable(fallback, what, error)

    def _unavailable(self, fallback: Callable[[], T], what: str, error: Exception | None) -> T:
        closed = conf.REDIS_FAIL_MODE == "closed"
        if self.outage_log.should_log():
            logger.warning(
                "usage_limits: Redis is unavailable (%s)%s; %s until it answers again "
                "(logged once every %.0f s per process).",
                error or "circuit breaker open",
                f", {self.outage_log.suppressed} more since the last message"
                if self.outage_log.suppressed
                else "",
                "refusing to count (REDIS_FAIL_MODE = 'closed')"
                if closed
                else "counting in the database (REDIS_FAIL_MODE = 'open')",
                conf.REDIS_FAIL_LOG_INTERVAL,
            )
            self.outage_log.suppressed = 0
        if closed:
            raise StoreUnavailable(
                f"The usage counter store (Redis) is unavailable ({what}); try again shortly."
            )
        return fallback()

    # --- counting: one script call --------------------------------------------------------------

    def consume(
        self, key: CounterKey, quantity: int, limit: int | None, *, rules_version: int | None = None
    ) -> CounterChange:
        return self._with_redis(
            lambda: self._change(key, "c", quantity, limit, rules_version),
            lambda: self._counted_in_database(
                key, self.fallback.consume(key, quantity, limit, rules_version=rules_version)
            ),
            "consume",
        )

    def increment(
        self, key: CounterKey, quantity: int, *, rules_version: int | None = None
    ) -> CounterChange:
        return self._with_redis(
            lambda: self._change(key, "c", quantity, None, rules_version),
            lambda: self._counted_in_database(
                key, self.fallback.increment(key, quantity, rules_version=rules_version)
            ),
            "increment",
        )

    def rules_changed(self, tenant_ids: list[int]) -> None:
        """Drop the copied rules versions (after their change committed), in one round trip."""
        script = self._script("rules_changed")
        ttl = conf.CACHE_TIMEOUT
        calls = [
            _run_script(script, [self.keys.rules(tenant_id)], [ttl]) for tenant_id in tenant_ids
        ]
        try:
            run_batch(self.client, calls)
        except (redis_errors.RedisError, TimeoutError):
            # Redis cannot hear of it now: the copies it keeps expire within CACHE_TIMEOUT
            # seconds, and a count whose script still accepts one until then is the bound.
            logger.exception(
                "usage_limits: Redis did not hear of a rules change of %d tenant(s); its copies "
                "of their rules versions expire within %s s",
                len(tenant_ids),
                ttl,
            )

    def _rules_version_copied(self, tenant_id: int, expected: int, epoch: str) -> None:
        """After a STALE reply: the database decides. Rules read before a change that committed
        are refused (:class:`StaleRules`); otherwise the database's version is copied to Redis
        (unless a change moved the epoch meanwhile) and the count runs again."""
        current = list(Tenant.objects.filter(pk=tenant_id).values_list("rules_version", flat=True))
        if not current:
            raise UnknownTenant(f"No tenant with id {tenant_id!r}.")
        if current[0] != expected:
            raise StaleRules(
                f"The rules of tenant {tenant_id} changed (version {current[0]}, not {expected})."
            )
        self._script("set_rules_version")(
            keys=[self.keys.rules(tenant_id)], args=[epoch, expected, conf.CACHE_TIMEOUT]
        )

    def refund(self, key: CounterKey, quantity: int) -> CounterChange:
        return self._with_redis(
            lambda: self._change(key, "r", quantity, None),
            lambda: self._counted_in_database(key, self.fallback.refund(key, quantity)),
            "refund",
        )

    def _names(self, key: CounterKey) -> _CounterNames:
        """The Redis names of a counter, computed once per counter and process (hot path)."""
        names = self._names_cache.get(key)
        if names is None:
            if len(self._names_cache) >= _NAMES_CACHE_SIZE:
                self._names_cache.clear()
            keys = self.keys
            expiry = expire_at(key.period)
            # A period long over gets "an hour from now", which must not be remembered.
            lasting = expiry == 0 or expiry > time.time() + 2 * _MIN_TTL_SECONDS
            names = self._names_cache[key] = _CounterNames(
                counter=keys.counter(key),
                dirty=keys.dirty(key.tenant_id),
                field=str(DirtyField.of(key)),
                expire_at=expiry if lasting else None,
                history=key.period.name != ALL_TIME.name,
            )
        return names

    def _with_bucket(self, key: CounterKey, names: _CounterNames, day: date) -> _CounterNames:
        """``names`` with today's bucket filled in (once per counter and day)."""
        if names.day != day:
            names = replace(
                names,
                day=day,
                bucket=self.keys.day_bucket(key.tenant_id, key.feature, day),
                bucket_field=str(DayField(key.feature, day)),
            )
            self._names_cache[key] = names
        return names

    def _change(
        self,
        key: CounterKey,
        op: str,
        quantity: int,
        limit: int | None,
        rules_version: int | None = None,
    ) -> CounterChange:
        names = self._names(key)
        args: list[Any] = [
            op,
            quantity,
            -1 if limit is None else limit,
            names.field,
            "",
            expire_at(key.period) if names.expire_at is None else names.expire_at,
        ]
        rules = self.keys.rules(key.tenant_id)
        if names.history and conf.HISTORY:
            today = self.today()
            names = self._with_bucket(key, names, today.day)
            keys = [names.counter, names.dirty, rules, names.bucket]
            ttl = max(int(today.expire_at - time.time()), _MIN_TTL_SECONDS)
            args += [names.bucket_field, ttl]
        else:
            keys = [names.counter, names.dirty, rules]
            args += ["", ""]
        args.append("" if rules_version is None else rules_version)
        reply = self._script("change")(keys=keys, args=args)
        for _attempt in range(_RULES_ATTEMPTS):
            if reply[0] != STALE:
                break
            assert rules_version is not None  # only a checked change is refused as stale
            self._rules_version_copied(key.tenant_id, rules_version, str(reply[1]))
            reply = self._script("change")(keys=keys, args=args)
        else:
            raise StaleRules(f"The rules of tenant {key.tenant_id} keep changing.")
        if reply[0] == MISSING:
            reply = self._seed_and_change(key, keys, args)
        status, before, after = int(reply[0]), int(reply[1]), int(reply[2])
        if status == DENIED:
            return CounterChange(applied=False, before=before, after=before)
        return CounterChange(applied=True, before=before, after=after, outside_transaction=True)

    def undo(self, key: CounterKey, change: CounterChange) -> None:
        if not (change.applied and change.outside_transaction):
            return  # counted in the database (fail open): the rollback undid it
        quantity = change.after - change.before
        if quantity == 0:
            return
        try:
            # Straight to Redis, never the fail mode's database fallback: the units are in Redis.
            # A count is taken back by a refund, a refund by counting again (without the limit:
            # the units were counted before).
            if quantity > 0:
                self._change(key, "r", quantity, None)
            else:
                self._change(key, "c", -quantity, None)
        except Exception:
            logger.exception(
                "usage_limits: a change of %+d unit(s) of %s in Redis for tenant %s could not be "
                "taken back after the database transaction it belonged to failed; the counter is "
                "off by that much until corrected (reset or set_usage).",
                quantity,
                key.feature,
                key.tenant_id,
            )

    def _seed_and_change(self, key: CounterKey, keys: list[str], args: list[Any]) -> list[int]:
        """Copy the database's value into Redis (if still missing) and run the change.

        The row stays locked from the read to the seed, so a database-side change (a process
        whose breaker is still open) cannot slip in between and be lost; ``redis_synced``
        records that Redis now holds everything the row counted.
        """
        alias = conf.DATABASE_ALIAS
        with transaction.atomic(using=alias):
            row = _locked_row(alias, key)
            seed = 0 if row is None else row[1]
            reply: list[int] = self._script("change")(keys=keys, args=[*args[:4], seed, *args[5:]])
            if row is not None and int(reply[3]) == 1:
                UsageRecord.objects.using(alias).filter(pk=row[0]).update(
                    redis_synced=seed, redis_stale=False, redis_version=F("redis_version") + 1
                )
        return reply

    def _counted_in_database(self, key: CounterKey, change: CounterChange) -> CounterChange:
        """Mark a row the database counted during an outage, for the flush to add to Redis."""
        if change.after != change.before:
            _rows(conf.DATABASE_ALIAS, key).update(redis_stale=True)
        return change

    # --- absolute changes: Redis and the database row together ----------------------------------

    def set(self, key: CounterKey, value: int) -> CounterChange:
        return self._with_redis(
            lambda: self._assign(key, value, create=True),
            lambda: _refuse_absolute_change("set"),
            "set",
        )

    def reset(self, key: CounterKey) -> CounterChange:
        return self._with_redis(
            lambda: self._assign(key, 0, create=False),
            lambda: _refuse_absolute_change("reset"),
            "reset",
        )

    def _assign(self, key: CounterKey, value: int, *, create: bool) -> CounterChange:
        alias = conf.DATABASE_ALIAS
        now = timezone.now()
        with transaction.atomic(using=alias):
            row = _locked_row(alias, key)
            if row is None and create:
                # Only when missing: an insert that meets a duplicate takes a shared lock on
                # MySQL, which would deadlock with a flush waiting for the same row.
                _insert_missing_rows(alias, [key], now)
                row = _locked_row(alias, key)
            held = self._script("assign")(
                keys=[self.keys.counter(key), self.keys.dirty(key.tenant_id)],
                args=[value, str(DirtyField.of(key)), expire_at(key.period)],
            )
            if row is None:
                if held is None:
                    return CounterChange(applied=False, before=0, after=0)
                # Counted in Redis, never flushed: the record gets its row now (value 0).
                _insert_missing_rows(alias, [key], now)
                before = int(held)
            else:
                pk, used, synced = row
                # What the row counted during an outage and Redis has not absorbed yet.
                before = used if held is None else int(held) + (used - synced)
                UsageRecord.objects.using(alias).filter(pk=pk).update(
                    used=value,
                    redis_synced=value,
                    redis_stale=False,
                    redis_version=F("redis_version") + 1,
                    updated_at=now,
                )
        return CounterChange(applied=True, before=max(before, 0), after=value)

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: CounterKey) -> int:
        def read() -> int:
            value = self.client.get(self.keys.counter(key))
            return self.fallback.get(key) if value is None else int(value)

        return self._with_redis(read, lambda: self.fallback.get(key), "get")

    def get_many(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        wanted = list(keys)

        def read() -> dict[CounterKey, int]:
            by_tenant: dict[int, list[CounterKey]] = defaultdict(list)
            for key in wanted:
                by_tenant[key.tenant_id].append(key)
            # One MGET per tenant (a tenant's keys share a Cluster slot), all in one round trip.
            groups = list(by_tenant.values())
            replies_by_group = run_batch(
                self.client,
                [_mget([self._names(k).counter for k in group]) for group in groups],
            )
            values: dict[CounterKey, int] = {}
            missing: list[CounterKey] = []
            for group, replies in zip(groups, replies_by_group, strict=True):
                for key, value in zip(group, replies, strict=True):
                    if value is None:
                        missing.append(key)
                    else:
                        values[key] = int(value)
            if missing:
                values.update(self.fallback.get_many(missing))
            return values

        if not wanted:
            return {}
        return self._with_redis(read, lambda: self.fallback.get_many(wanted), "get_many")

    def daily_usage(self, tenant_id: int, feature: str, first: date, last: date) -> dict[date, int]:
        """The buckets in the database plus what Redis counted that the flush has not copied.

        One query and, for the days whose buckets may still be in Redis (today and the
        ``REDIS_EXPIRE_AFTER_PERIOD`` before it), one script call. A bucket's value is worked
        out as the flush would write it, so the answer is the same before and after a flush.
        When Redis cannot answer, the database's buckets alone (up to one flush behind).
        """
        rows = {
            day: (int(used), int(synced), token)
            for day, used, synced, token in UsageDailyBucket.objects.using(conf.DATABASE_ALIAS)
            .filter(tenant_id=tenant_id, feature=feature, day__range=(first, last))
            .values_list("day", "used", "redis_synced", "redis_token")
        }
        recorded = {day: used for day, (used, _synced, _token) in rows.items() if used}
        today = self.today().day
        kept = timedelta(seconds=conf.REDIS_EXPIRE_AFTER_PERIOD) + timedelta(days=1)
        days: list[date] = []
        day = max(first, today - kept)
        while day <= min(last, today):
            days.append(day)
            day += timedelta(days=1)
        if not days or not self.breaker.allows_call():
            return recorded
        bucket_keys = [self.keys.day_bucket(tenant_id, feature, d) for d in days]
        try:
            reply = self._script("read_days")(keys=bucket_keys)
        except redis_errors.RedisError as exc:
            if not is_outage(exc):
                raise
            self.breaker.record_failure()
            return recorded
        except UNAVAILABLE:
            self.breaker.record_failure()
            return recorded
        counted = dict(recorded)
        for index, day in enumerate(days):
            n, token = reply[2 * index], reply[2 * index + 1]
            if n is None:
                continue
            used = bucket_value(rows.get(day), int(n), token)
            if used:
                counted[day] = used
            else:
                counted.pop(day, None)
        return counted

    # --- operations ----------------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether Redis answers now (for health checks); never raises."""
        try:
            return bool(self.client.ping())
        except redis_errors.RedisError:
            return False
        except UNAVAILABLE:
            return False


def bucket_value(row: tuple[int, int, str] | None, n: int, token: str) -> int:
    """A daily bucket's value once Redis's count ``n`` (of bucket ``token``) is copied in.

    ``row`` is the database's ``(used, redis_synced, redis_token)``. ``used - redis_synced`` is
    what the database counted itself (while Redis was unreachable): kept. A bucket with another
    token is a new one (Redis lost the old, already copied one): all of ``n`` is new.
    """
    if row is None:
        return n
    used, synced, known = row
    if token == known:
        return max(used - synced + n, 0)
    return used + n


def _run_script(script: Any, keys: list[str], args: list[Any]) -> Callable[[Any], Any]:
    return lambda client: script(keys=keys, args=args, client=client)


def _mget(names: list[str]) -> Callable[[Any], Any]:
    return lambda client: client.mget(names)


def expire_at(period: Period) -> int:
    """When a period's counter may leave Redis (0: never, for allocations and manual counters)."""
    if period.end is None:
        return 0
    return max(
        int(period.end.timestamp()) + conf.REDIS_EXPIRE_AFTER_PERIOD,
        int(time.time()) + _MIN_TTL_SECONDS,
    )


def _rows(alias: str, key: CounterKey) -> Any:
    return UsageRecord.objects.using(alias).filter(
        tenant_id=key.tenant_id, feature=key.feature, period_start=key.period.start
    )


def _locked_row(alias: str, key: CounterKey) -> tuple[int, int, int] | None:
    """``(pk, used, redis_synced)`` of the counter's row, locked until the transaction ends."""
    row: tuple[int, int, int] | None = (
        _rows(alias, key)
        .select_for_update()
        .order_by()
        .values_list("pk", "used", "redis_synced")
        .first()
    )
    return row


def _insert_missing_rows(alias: str, keys: Iterable[CounterKey], now: Any) -> None:
    UsageRecord.objects.using(alias).bulk_create(
        [
            UsageRecord(
                tenant_id=key.tenant_id,
                feature=key.feature,
                period_key=key.period.key,
                period_start=key.period.start,
                period_end=key.period.end,
                used=0,
                redis_synced=0,
                created_at=now,
                updated_at=now,
            )
            for key in keys
        ],
        ignore_conflicts=True,
    )


def _refuse_absolute_change(what: str) -> CounterChange:
    # A set or reset replaces whatever Redis holds, including units it has not flushed yet; done
    # in the database alone it could not be reconciled with them later. Refuse and let the
    # operator (or the job) try again once Redis answers.
    raise StoreUnavailable(
        f"Cannot {what} a usage counter while Redis is unavailable; try again when it is back."
    )
