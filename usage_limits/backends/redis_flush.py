"""Write-behind: copy the Redis store's counters into ``UsageRecord`` (the record), and its daily
history buckets into ``UsageDailyBucket``.

Run it every few seconds to minutes (``manage.py usage_limits_flush``, or :func:`flush_counters`
from a task runner). Why it never counts twice, loses nothing, and may run in several processes
at once (docs/scaling.md has the long form):

* **Absolute values.** The flush writes the value Redis holds, not a difference, so running it
  again (after a crash, or twice in a row) writes the same number. Refunds and resets lower a
  counter and the flush lowers the row with it (``GREATEST`` would keep a refunded unit forever).
* **One writer per row at a time.** The rows are locked (in primary-key order) *before* Redis is
  read, so two flushes serialise per row and the later one reads Redis later: a slow flush can
  never write an older value over a newer one.
* **Dirty marks by generation.** Each change stamps its counter with a new generation in the
  tenant's dirty hash; the flush reads the generation together with the value and, after the
  database committed, removes the mark only if the generation did not move. A change that raced
  the flush keeps its mark for the next run.
* **Outage units.** While Redis was unreachable (fail-open), the database counted on its own and
  marked the row ``redis_stale``; ``used - redis_synced`` is what it counted. The flush adds that
  difference to Redis in the same script that reads the value and remembers, per row, the
  baseline (``redis_version``) and the row value it added for: a flush that crashed before its
  commit and runs again adds only what the row counted since, never the same units twice.
* **Daily buckets, the same way.** A bucket in Redis holds what Redis counted on that day; its
  row remembers the part of ``used`` it copied from Redis (``redis_synced``) and which bucket that
  was (``redis_token``, set when Redis created the bucket). The flush writes
  ``used - redis_synced + n``: the same number however often it runs, keeping what the database
  counted itself during an outage. A bucket with a new token (Redis lost the old one after it was
  copied) adds all of its ``n``. Rows are locked before Redis is read and marks are cleared by
  generation, exactly as for counters.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import reduce
from operator import or_
from typing import Any

from django.db import OperationalError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from usage_limits.backends import get_store
from usage_limits.backends.redis import RedisStore, bucket_value
from usage_limits.backends.redis_client import run_batch
from usage_limits.backends.redis_keys import DIRTY_SEQUENCE_FIELD, DayField, DirtyField
from usage_limits.backends.redis_scripts import CLEAR_DIRTY, FLUSH_READ, FLUSH_READ_DAYS
from usage_limits.conf import conf
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord

logger = logging.getLogger("usage_limits")

DEFAULT_BATCH_SIZE = 500
_SCAN_COUNT = 1000
_ATTEMPTS = 3

# (tenant_id, feature, period_start): how a counter's row is found.
_RowKey = tuple[int, str, datetime]
# (tenant_id, feature, day): how a daily bucket's row is found.
_DayKey = tuple[int, str, date]


@dataclass
class _TenantWork:
    """What to flush of one tenant: counters and daily buckets, by dirty field."""

    counters: dict[str, DirtyField] = dataclasses.field(default_factory=dict)
    days: dict[str, DayField] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.counters) + len(self.days)


@dataclass
class FlushReport:
    """What one flush did."""

    counters: int = 0  # counters looked at (dirty in Redis, or counted by the database)
    written: int = 0  # rows whose value changed
    reconciled: int = 0  # rows whose outage units were added to Redis
    cleared: int = 0  # dirty marks removed
    missing: int = 0  # counters gone from Redis (expired, or lost with Redis's data)
    tenants_gone: int = 0  # deleted tenants whose marks were dropped
    days: int = 0  # daily history buckets looked at
    days_written: int = 0  # daily bucket rows whose value changed

    def __str__(self) -> str:
        return (
            f"{self.counters} counters, {self.written} rows written, "
            f"{self.reconciled} reconciled with Redis, {self.cleared} marks cleared, "
            f"{self.missing} missing from Redis, {self.tenants_gone} deleted tenants, "
            f"{self.days} daily buckets, {self.days_written} written"
        )


def flush_counters(
    *, batch_size: int = DEFAULT_BATCH_SIZE, store: RedisStore | None = None
) -> FlushReport:
    """Copy every changed Redis counter into its ``UsageRecord`` row, and every changed daily
    bucket into its ``UsageDailyBucket`` row; safe to re-run any time.

    This is the function to schedule from a task runner (Celery beat, RQ, cron). ``store``
    defaults to the configured store when it is a :class:`RedisStore`, otherwise to a new one
    built from the Redis settings (to drain Redis after switching back to the database store).
    """
    if store is None:
        configured = get_store()
        store = configured if isinstance(configured, RedisStore) else RedisStore()
    report = FlushReport()
    work = _pending_counters(store, report)
    batch: dict[int, _TenantWork] = {}
    size = 0
    for tenant_id in sorted(work):
        batch[tenant_id] = work[tenant_id]
        size += len(work[tenant_id])
        if size >= batch_size:
            _flush_batch_retrying(store, batch, report)
            batch, size = {}, 0
    if batch:
        _flush_batch_retrying(store, batch, report)
    return report


def _flush_batch_retrying(
    store: RedisStore, batch: dict[int, _TenantWork], report: FlushReport
) -> None:
    """Flush a batch; a deadlock or lock timeout between flushes just means "run it again"."""
    alias = conf.DATABASE_ALIAS
    for attempt in range(1, _ATTEMPTS + 1):
        partial = FlushReport()
        try:
            _flush_batch(store, batch, partial)
        except OperationalError:
            # Inside the caller's transaction a retry cannot start over: let the caller decide.
            if attempt == _ATTEMPTS or connections[alias].in_atomic_block:
                raise
            logger.info("usage_limits: flush batch hit a lock conflict, retrying", exc_info=True)
            time.sleep(0.05 * attempt)
            continue
        for name in (
            "counters",
            "written",
            "reconciled",
            "cleared",
            "missing",
            "days",
            "days_written",
        ):
            setattr(report, name, getattr(report, name) + getattr(partial, name))
        return


def _pending_counters(store: RedisStore, report: FlushReport) -> dict[int, _TenantWork]:
    """Counters and buckets to flush, by tenant: dirty in Redis, or counted by the database in an
    outage (counters only: the database's buckets need nothing from Redis)."""
    keys = store.keys
    client = store.client
    work: dict[int, _TenantWork] = defaultdict(_TenantWork)
    dirty_keys = list(client.scan_iter(match=keys.dirty_pattern, count=_SCAN_COUNT, _type="HASH"))
    for start in range(0, len(dirty_keys), _SCAN_COUNT):
        chunk = dirty_keys[start : start + _SCAN_COUNT]
        pipe = client.pipeline(transaction=False)
        for dirty_key in chunk:
            pipe.hkeys(dirty_key)
        for dirty_key, fields in zip(chunk, pipe.execute(), strict=True):
            tenant_id = keys.tenant_of(dirty_key)
            for text in fields:
                if text == DIRTY_SEQUENCE_FIELD:
                    continue
                if DayField.is_day_field(text):
                    work[tenant_id].days[text] = DayField.parse(text)
                else:
                    work[tenant_id].counters[text] = DirtyField.parse(text)
    alias = conf.DATABASE_ALIAS
    stale = UsageRecord.objects.using(alias).filter(redis_stale=True)
    for tenant_id, feature, period_key, start_at, end_at in stale.values_list(
        "tenant_id", "feature", "period_key", "period_start", "period_end"
    ):
        counter = DirtyField.of_row(feature, start_at, end_at, period_key)
        work[tenant_id].counters.setdefault(str(counter), counter)
    if work:
        existing = set(
            Tenant.objects.using(alias).filter(pk__in=list(work)).values_list("pk", flat=True)
        )
        gone = [tenant_id for tenant_id in work if tenant_id not in existing]
        for tenant_id in gone:
            # Their rows went with them (CASCADE); their keys go too, or allocations (which never
            # expire) would stay forever and the marks would keep coming back.
            leftovers = list(client.scan_iter(match=keys.tenant_pattern(tenant_id), count=1000))
            for start in range(0, len(leftovers), _SCAN_COUNT):
                client.delete(*leftovers[start : start + _SCAN_COUNT])
            del work[tenant_id]
        report.tenants_gone += len(gone)
    return dict(work)


def _flush_batch(store: RedisStore, batch: dict[int, _TenantWork], report: FlushReport) -> None:
    keys = store.keys
    client = store.client
    read_script = client.register_script(FLUSH_READ)
    read_days_script = client.register_script(FLUSH_READ_DAYS)
    alias = conf.DATABASE_ALIAS
    now = timezone.now()
    counters = [
        (tenant_id, field)
        for tenant_id in sorted(batch)
        for field in sorted(batch[tenant_id].counters.values(), key=str)
    ]
    days = [
        (tenant_id, field)
        for tenant_id in sorted(batch)
        for field in sorted(batch[tenant_id].days.values(), key=str)
    ]
    report.counters += len(counters)
    report.days += len(days)
    generations: dict[int, list[tuple[str, str]]] = defaultdict(list)
    with transaction.atomic(using=alias):
        # Counter rows first, then bucket rows, each in primary-key order: the order the
        # database store's own changes take them in, so nobody waits in a circle.
        rows = _lock_rows(alias, counters)
        new = [(t, f) for t, f in counters if (t, f.feature, f.period_start) not in rows]
        if new:
            # Counters never flushed: create their rows only now, after the existing ones are
            # locked in key order (an insert that meets a duplicate takes a shared lock on
            # MySQL, which two flushes could each hold while waiting for the other's).
            _insert_missing_rows(alias, new, now)
            rows.update(_lock_rows(alias, new))
        day_rows = _lock_day_rows(alias, days)
        new_days = [(t, f) for t, f in days if (t, f.feature, f.day) not in day_rows]
        if new_days:
            _insert_missing_day_rows(alias, new_days)
            day_rows.update(_lock_day_rows(alias, new_days))
        calls: list[Callable[[Any], Any]] = []
        plans: list[tuple[int, list[tuple[DirtyField, tuple[Any, ...] | None]]]] = []
        day_plans: list[tuple[int, list[tuple[DayField, tuple[Any, ...] | None]]]] = []
        for tenant_id in sorted(batch):
            fields = sorted(batch[tenant_id].counters.values(), key=str)
            if fields:
                plan = [(f, rows.get((tenant_id, f.feature, f.period_start))) for f in fields]
                args: list[Any] = [conf.REDIS_EXPIRE_AFTER_PERIOD]
                for field, row in plan:
                    if row is None:  # a tenant deleted meanwhile: nothing to write to
                        args += [str(field), 0, "", 0, 0]
                    else:
                        pk, used, synced, version, _stale = row
                        args += [str(field), pk, version, used, used - synced]
                redis_keys = [
                    keys.dirty(tenant_id),
                    keys.applied(tenant_id),
                    *(keys.counter_for(tenant_id, f) for f in fields),
                ]
                calls.append(_script_call(read_script, redis_keys, args))
                plans.append((tenant_id, plan))
        for tenant_id in sorted(batch):
            day_fields = sorted(batch[tenant_id].days.values(), key=str)
            if day_fields:
                calls.append(
                    _script_call(
                        read_days_script,
                        [
                            keys.dirty(tenant_id),
                            *(keys.day_bucket(tenant_id, f.feature, f.day) for f in day_fields),
                        ],
                        [str(f) for f in day_fields],
                    )
                )
                day_plans.append(
                    (
                        tenant_id,
                        [(f, day_rows.get((tenant_id, f.feature, f.day))) for f in day_fields],
                    )
                )
        replies = run_batch(client, calls)
        updates: list[UsageRecord] = []
        unmark: list[int] = []
        for (tenant_id, plan), reply in zip(plans, replies[: len(plans)], strict=True):
            for index, (field, row) in enumerate(plan):
                value, generation = reply[2 * index], reply[2 * index + 1]
                if generation is not None:
                    generations[tenant_id].append((str(field), generation))
                if row is None:
                    continue
                pk, used, synced, version, stale = row
                if value is None:
                    report.missing += 1
                    if stale and field.period_end is not None and field.period_end <= now:
                        unmark.append(pk)  # period over and gone from Redis: the row is final
                    continue
                value = int(value)
                if used != synced:
                    report.reconciled += 1
                if value != used or value != synced or stale:
                    updates.append(
                        UsageRecord(
                            pk=pk,
                            used=value,
                            redis_synced=value,
                            redis_version=version + 1,
                            redis_stale=False,
                            updated_at=now,
                        )
                    )
        day_updates: list[UsageDailyBucket] = []
        for (tenant_id, day_plan), reply in zip(day_plans, replies[len(plans) :], strict=True):
            for index, (day_field, day_row) in enumerate(day_plan):
                n, token, generation = reply[3 * index : 3 * index + 3]
                if generation is not None:
                    generations[tenant_id].append((str(day_field), generation))
                if day_row is None:
                    continue
                pk, used, synced, known = day_row
                if n is None:  # expired, or lost with Redis's data: the row keeps what it has
                    report.missing += 1
                    continue
                n = int(n)
                value = bucket_value((used, synced, known), n, token)
                if (value, n, token) != (used, synced, known):
                    day_updates.append(
                        UsageDailyBucket(pk=pk, used=value, redis_synced=n, redis_token=token)
                    )
        UsageRecord.objects.using(alias).bulk_update(
            updates,
            ["used", "redis_synced", "redis_version", "redis_stale", "updated_at"],
            batch_size=500,
        )
        if unmark:
            UsageRecord.objects.using(alias).filter(pk__in=unmark).update(redis_stale=False)
        UsageDailyBucket.objects.using(alias).bulk_update(
            day_updates, ["used", "redis_synced", "redis_token"], batch_size=500
        )
        report.written += len(updates)
        report.days_written += len(day_updates)
    # Only after the commit: a crash before it leaves every mark in place for the next run.
    clear = client.register_script(CLEAR_DIRTY)
    clears = [
        _script_call(clear, [keys.dirty(tenant_id)], [x for pair in pairs for x in pair])
        for tenant_id, pairs in generations.items()
    ]
    report.cleared += sum(int(n) for n in run_batch(client, clears))


def _script_call(script: Any, redis_keys: list[str], args: list[Any]) -> Callable[[Any], Any]:
    return lambda client: script(keys=redis_keys, args=args, client=client)


def _insert_missing_rows(alias: str, counters: list[tuple[int, DirtyField]], now: datetime) -> None:
    UsageRecord.objects.using(alias).bulk_create(
        [
            UsageRecord(
                tenant_id=tenant_id,
                feature=field.feature,
                period_key=field.period_key,
                period_start=field.period_start,
                period_end=field.period_end,
                used=0,
                redis_synced=0,
                created_at=now,
                updated_at=now,
            )
            for tenant_id, field in counters
        ],
        ignore_conflicts=True,
    )


def _lock_rows(
    alias: str, counters: list[tuple[int, DirtyField]]
) -> dict[_RowKey, tuple[Any, ...]]:
    if not counters:
        return {}
    condition = reduce(
        or_,
        (
            Q(tenant_id=tenant_id, feature=field.feature, period_start=field.period_start)
            for tenant_id, field in counters
        ),
    )
    rows = (
        UsageRecord.objects.using(alias)
        .select_for_update()
        .filter(condition)
        .order_by("pk")
        .values_list(
            "tenant_id",
            "feature",
            "period_start",
            "pk",
            "used",
            "redis_synced",
            "redis_version",
            "redis_stale",
        )
    )
    return {(t, f, s): tuple(rest) for (t, f, s, *rest) in rows}


def _insert_missing_day_rows(alias: str, days: list[tuple[int, DayField]]) -> None:
    UsageDailyBucket.objects.using(alias).bulk_create(
        [
            UsageDailyBucket(tenant_id=tenant_id, feature=field.feature, day=field.day, used=0)
            for tenant_id, field in days
        ],
        ignore_conflicts=True,
    )


def _lock_day_rows(alias: str, days: list[tuple[int, DayField]]) -> dict[_DayKey, tuple[Any, ...]]:
    if not days:
        return {}
    condition = reduce(
        or_, (Q(tenant_id=tenant_id, feature=f.feature, day=f.day) for tenant_id, f in days)
    )
    rows = (
        UsageDailyBucket.objects.using(alias)
        .select_for_update()
        .filter(condition)
        .order_by("pk")
        .values_list("tenant_id", "feature", "day", "pk", "used", "redis_synced", "redis_token")
    )
    return {(t, f, d): tuple(rest) for (t, f, d, *rest) in rows}


__all__ = ["FlushReport", "flush_counters"]
