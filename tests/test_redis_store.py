"""What is particular to the Redis store: its keys, seeding from the record, and the flush."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest

from tests.conftest import require_module

redis = require_module("redis", 'pip install -e ".[redis]"')

from django.core.management import call_command  # noqa: E402
from django.db.models import QuerySet  # noqa: E402
from django.utils import timezone  # noqa: E402

from usage_limits import consume, get_usage, increment_usage, refund, set_usage  # noqa: E402
from usage_limits.backends import CounterKey, get_store  # noqa: E402
from usage_limits.backends.base import usage_day  # noqa: E402
from usage_limits.backends.redis import RedisStore  # noqa: E402
from usage_limits.backends.redis_flush import flush_counters  # noqa: E402
from usage_limits.backends.redis_keys import DirtyField, epoch, from_epoch  # noqa: E402
from usage_limits.backends.redis_scripts import FLUSH_READ  # noqa: E402
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord  # noqa: E402
from usage_limits.periods import ALL_TIME, period_containing  # noqa: E402
from usage_limits.testing.factories import TenantFactory, plan_with_limits  # noqa: E402

from .concurrency import run_in_threads  # noqa: E402
from .redis_service import (  # noqa: E402
    PrivateRedis,
    private_redis,  # noqa: F401  (fixture)
    redis_prefix,  # noqa: F401  (fixture)
    redis_settings,
    shared_redis,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_prefix")]

MARCH = period_containing("monthly", dt.datetime(2026, 3, 10, tzinfo=dt.UTC))


def store() -> RedisStore:
    current = get_store()
    assert isinstance(current, RedisStore)
    return current


def row(tenant: Tenant, feature: str = "api_calls") -> UsageRecord:
    return UsageRecord.objects.get(tenant=tenant, feature=feature)


@pytest.fixture
def client() -> redis.Redis:
    return shared_redis()


def test_keys_carry_the_tenant_as_a_hash_tag_and_expire_after_the_period(
    tenant: Tenant, client: redis.Redis
) -> None:
    prefix = store().keys.prefix
    period = period_containing("monthly", timezone.now())
    store().increment(CounterKey(tenant.pk, "api_calls", period), 2)
    name = f"{prefix}:{{{tenant.pk}}}:api_calls:{int(period.start.timestamp())}"
    assert client.get(name) == "2"
    assert period.end is not None
    expected = int(period.end.timestamp()) + 7 * 24 * 3600
    assert expected - 5 <= client.expiretime(name) <= expected + 5
    # A period long over still gets time for the flush to copy it.
    store().increment(CounterKey(tenant.pk, "api_calls", MARCH), 1)
    late = client.ttl(f"{prefix}:{{{tenant.pk}}}:api_calls:{int(MARCH.start.timestamp())}")
    assert 3500 <= late <= 3600
    # Every key of the tenant hashes to the same Cluster slot.
    tags = {k[k.index("{") : k.index("}") + 1] for k in client.scan_iter(f"{prefix}:*")}
    assert tags == {f"{{{tenant.pk}}}"}


def test_the_store_answers_a_health_check() -> None:
    assert store().ping()


def test_allocations_never_expire(tenant: Tenant, client: redis.Redis) -> None:
    store().set(CounterKey(tenant.pk, "seats", ALL_TIME), 3)
    assert client.ttl(f"{store().keys.prefix}:{{{tenant.pk}}}:seats:0") == -1


def test_epochs_round_trip_to_the_microsecond() -> None:
    moment = dt.datetime(2026, 3, 1, 12, 30, 5, 123, tzinfo=dt.UTC)
    assert epoch(moment) == f"{int(moment.timestamp())}.000123"
    assert from_epoch(epoch(moment)) == moment
    assert from_epoch(epoch(MARCH.start)) == MARCH.start


def test_a_counter_missing_from_redis_is_seeded_from_the_record(
    tenant: Tenant, client: redis.Redis
) -> None:
    plan_with_limits("FREE", api_calls=10)
    for _ in range(6):
        consume(tenant, "api_calls")
    flush_counters()
    assert row(tenant).used == 6
    # Redis loses its data (a restart without persistence): nobody gets a fresh quota.
    client.delete(*client.keys(f"{store().keys.prefix}:*"))
    decisions = [consume(tenant, "api_calls") for _ in range(5)]
    assert [d.used for d in decisions] == [7, 8, 9, 10, 10]
    assert [d.allowed for d in decisions] == [True] * 4 + [False]


def test_switching_from_the_database_store_keeps_the_counts(tenant: Tenant, settings: Any) -> None:
    redis_limits = settings.USAGE_LIMITS
    database_store = "usage_limits.backends.database.DatabaseStore"
    settings.USAGE_LIMITS = {**redis_limits, "STORE": database_store}
    increment_usage(tenant, "api_calls", 40)
    settings.USAGE_LIMITS = redis_limits
    assert consume(tenant, "api_calls").used == 41
    flush_counters()
    assert row(tenant).used == 41


def test_the_flush_copies_absolute_values_and_rerunning_it_changes_nothing(
    tenant: Tenant,
) -> None:
    increment_usage(tenant, "api_calls", 5)
    first = flush_counters()
    assert (first.counters, first.written, first.cleared) == (1, 1, 2)  # counter and bucket
    assert (first.days, first.days_written) == (1, 1)
    assert row(tenant).used == 5
    again = flush_counters()
    assert (again.counters, again.written) == (0, 0)
    assert row(tenant).used == 5


def test_refunds_and_resets_lower_the_record(tenant: Tenant) -> None:
    increment_usage(tenant, "api_calls", 9)
    flush_counters()
    refund(tenant, "api_calls", 4)
    flush_counters()
    assert row(tenant).used == 5
    set_usage(tenant, "projects", 3)
    set_usage(tenant, "projects", 1)
    assert row(tenant, "projects").used == 1
    flush_counters()
    assert row(tenant, "projects").used == 1


def test_only_changed_counters_are_written(tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan)
    increment_usage(tenant, "api_calls")
    increment_usage(other, "api_calls")
    assert flush_counters().counters == 2
    increment_usage(other, "api_calls")
    report = flush_counters()
    assert (report.counters, report.written) == (1, 1)
    assert (row(tenant).used, row(other).used) == (1, 2)


def test_the_flush_command_reports_what_it_did(tenant: Tenant) -> None:
    increment_usage(tenant, "api_calls", 3)
    out = StringIO()
    call_command("usage_limits_flush", stdout=out)
    assert "1 counters, 1 rows written" in out.getvalue()
    assert row(tenant).used == 3


def test_a_deleted_tenant_is_dropped_from_the_flush_with_its_keys(
    tenant: Tenant, client: redis.Redis
) -> None:
    gone = TenantFactory(plan=tenant.plan)
    increment_usage(gone, "api_calls")
    store().increment(CounterKey(gone.pk, "seats", ALL_TIME), 2)
    increment_usage(tenant, "api_calls")
    gone.delete()
    report = flush_counters()
    assert (report.tenants_gone, report.written) == (1, 1)
    assert flush_counters().counters == 0
    assert list(client.scan_iter(match=store().keys.tenant_pattern(gone.pk))) == []
    assert list(client.scan_iter(match=store().keys.tenant_pattern(tenant.pk))) != []


def test_outage_units_are_added_to_redis_once_even_if_the_flush_is_replayed(
    tenant: Tenant, client: redis.Redis
) -> None:
    """The replay guard: a flush that added the difference and died before its commit."""
    increment_usage(tenant, "api_calls", 10)
    flush_counters()
    # The database counted 4 units while Redis was unreachable.
    UsageRecord.objects.filter(tenant=tenant).update(used=14, redis_stale=True)
    key = CounterKey(tenant.pk, "api_calls", get_usage(tenant).feature("api_calls").period)
    keys = store().keys
    read = client.register_script(FLUSH_READ)
    redis_keys = [keys.dirty(tenant.pk), keys.applied(tenant.pk), keys.counter(key)]

    def flush_read() -> str:
        record = row(tenant)
        args = [
            3600,
            str(DirtyField.of(key)),
            record.pk,
            record.redis_version,
            record.used,
            record.used - record.redis_synced,
        ]
        value: str = read(keys=redis_keys, args=args)[0]
        return value

    assert flush_read() == "14"
    # ... the process dies here, before the database commits. The next flush sees the same row:
    assert flush_read() == "14"
    # ... or the database counted one more unit in between (a process whose breaker is open):
    UsageRecord.objects.filter(tenant=tenant).update(used=15)
    assert flush_read() == "15"
    assert flush_read() == "15"
    flush_counters()
    assert (row(tenant).used, row(tenant).redis_synced, row(tenant).redis_stale) == (15, 15, False)
    assert store().get(key) == 15
    # A later outage starts from the new baseline.
    UsageRecord.objects.filter(tenant=tenant).update(used=17, redis_stale=True)
    flush_counters()
    assert store().get(key) == row(tenant).used == 17


@pytest.mark.django_db(transaction=True)
def test_flushes_running_concurrently_with_counting_never_write_an_old_value() -> None:
    tenant = TenantFactory(plan=plan_with_limits("BIG", api_calls=10_000))

    def work(index: int) -> int:
        if index < 2:
            for _ in range(15):
                flush_counters()
            return 0
        for _ in range(150):
            consume(tenant.pk, "api_calls")
            if index == 2:
                refund(tenant.pk, "api_calls")
        return 1

    run_in_threads(6, work)
    flush_counters()
    used = get_usage(tenant).feature("api_calls").used
    assert used == 3 * 150
    assert row(tenant).used == used
    buckets = UsageDailyBucket.objects.filter(tenant=tenant)
    assert sum(buckets.values_list("used", flat=True)) == used
    assert flush_counters().counters == 0


def test_get_many_reads_every_tenant_in_one_round_trip(
    tenant: Tenant, django_assert_num_queries: Any
) -> None:
    other = TenantFactory(plan=tenant.plan)
    keys = [CounterKey(t.pk, "api_calls", MARCH) for t in (tenant, other)]
    for k in keys:
        store().increment(k, 2)
    with django_assert_num_queries(0):
        assert store().get_many(keys) == dict.fromkeys(keys, 2)


def test_counting_in_steady_state_touches_no_database(
    tenant: Tenant, django_assert_num_queries: Any
) -> None:
    key = CounterKey(tenant.pk, "api_calls", MARCH)
    store().consume(key, 1, 100)  # first use: seeded from the (missing) row
    with django_assert_num_queries(0):
        for _ in range(10):
            store().consume(key, 1, 100)
    assert store().get(key) == 11


def test_the_flush_command_keeps_running_as_a_sidecar(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usage_limits.management.commands import usage_limits_flush

    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        increment_usage(tenant, "api_calls")  # traffic between two flushes
        if len(pauses) == 2:
            raise KeyboardInterrupt  # the operator stops the sidecar

    monkeypatch.setattr(usage_limits_flush.time, "sleep", sleep)
    out = StringIO()
    call_command("usage_limits_flush", "--every", "5", stdout=out)
    assert out.getvalue().count("Flushed in") == 2
    assert all(0 < pause <= 5 for pause in pauses)
    assert row(tenant).used == 1  # the second run flushed what came after the first


# --- daily history buckets ---------------------------------------------------------------------


def bucket_row(tenant: Tenant, feature: str = "api_calls") -> UsageDailyBucket:
    return UsageDailyBucket.objects.get(tenant=tenant, feature=feature, day=usage_day())


def seen_today(tenant: Tenant, feature: str = "api_calls") -> int:
    today = usage_day()
    return store().daily_usage(tenant.pk, feature, today, today).get(today, 0)


def test_the_bucket_is_a_hash_beside_the_counter_that_lives_on_after_the_day(
    tenant: Tenant, client: redis.Redis
) -> None:
    consume(tenant, "api_calls", 3)
    today = usage_day()
    name = store().keys.day_bucket(tenant.pk, "api_calls", today)
    assert name == f"{store().keys.prefix}:{{{tenant.pk}}}:day:api_calls:{today.isoformat()}"
    bucket = client.hgetall(name)
    assert bucket["n"] == "3"
    assert bucket["t"]  # names this bucket (a bucket recreated after a data loss gets another)
    day_ends = dt.datetime.combine(today + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    expected = int(day_ends.timestamp()) + 7 * 24 * 3600
    assert expected - 5 <= client.expiretime(name) <= expected + 5
    # marked for the flush beside the counter, with the same generation
    marks = client.hgetall(store().keys.dirty(tenant.pk))
    assert marks[f"@api_calls|{today.isoformat()}"] == marks["#"]


def test_unflushed_buckets_are_read_from_redis_and_the_flush_copies_them_once(
    tenant: Tenant,
) -> None:
    consume(tenant, "api_calls", 4)
    assert seen_today(tenant) == 4
    assert not UsageDailyBucket.objects.filter(tenant=tenant).exists()
    report = flush_counters()
    assert (report.days, report.days_written) == (1, 1)
    assert bucket_row(tenant).used == seen_today(tenant) == 4
    again = flush_counters()
    assert (again.days, again.days_written) == (0, 0)
    consume(tenant, "api_calls", 2)
    refund(tenant, "api_calls", 1)
    assert seen_today(tenant) == 5
    flush_counters()
    flush_counters()
    assert bucket_row(tenant).used == seen_today(tenant) == 5


def test_a_flush_that_died_after_its_commit_copies_nothing_twice(
    tenant: Tenant, client: redis.Redis
) -> None:
    consume(tenant, "api_calls", 6)
    marks_before = client.hgetall(store().keys.dirty(tenant.pk))
    flush_counters()
    # ... the process died before clearing the marks: they are all still there.
    client.hset(store().keys.dirty(tenant.pk), mapping=marks_before)
    report = flush_counters()
    assert (report.counters, report.days, report.written, report.days_written) == (1, 1, 0, 0)
    assert (row(tenant).used, bucket_row(tenant).used) == (6, 6)


def test_a_flush_that_died_before_its_commit_leaves_everything_for_the_next(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    consume(tenant, "api_calls", 2)
    flush_counters()
    consume(tenant, "api_calls", 5)

    bulk_update = QuerySet.bulk_update

    def die_at_the_buckets(queryset: QuerySet[Any], *args: Any, **kwargs: Any) -> int:
        if queryset.model is UsageDailyBucket:  # the counters were written: the last step
            raise RuntimeError("killed")
        return bulk_update(queryset, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(QuerySet, "bulk_update", die_at_the_buckets)
        with pytest.raises(RuntimeError):
            flush_counters()
    assert (row(tenant).used, bucket_row(tenant).used) == (2, 2)  # rolled back together
    flush_counters()
    assert (row(tenant).used, bucket_row(tenant).used) == (7, 7)


def test_the_flush_keeps_what_the_database_counted_and_a_bucket_redis_lost(
    tenant: Tenant, client: redis.Redis
) -> None:
    key = CounterKey(tenant.pk, "api_calls", get_usage(tenant).feature("api_calls").period)
    store().increment(key, 10)
    flush_counters()
    # Redis unreachable: the database counts 3 units, into the row and today's bucket.
    store()._counted_in_database(key, store().fallback.increment(key, 3))
    assert bucket_row(tenant).used == 13
    assert seen_today(tenant) == 13
    store().increment(key, 1)  # Redis is back, and counts on top
    flush_counters()
    assert (row(tenant).used, bucket_row(tenant).used) == (14, 14)
    # Redis loses its data: its next bucket is a new one, added to what the row holds.
    client.delete(*client.keys(f"{store().keys.prefix}:*"))
    store().increment(key, 2)
    assert seen_today(tenant) == 16
    flush_counters()
    flush_counters()
    assert (row(tenant).used, bucket_row(tenant).used) == (16, 16)


def test_history_off_keeps_no_bucket_in_redis(
    tenant: Tenant, client: redis.Redis, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "HISTORY": False}
    consume(tenant, "api_calls", 2)
    assert list(client.scan_iter(match=f"{store().keys.prefix}:*:day:*")) == []
    assert flush_counters().days == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_flushes_copy_every_bucket_exactly_once() -> None:
    tenants = [TenantFactory(plan=plan_with_limits("BIG", api_calls=10_000)) for _ in range(3)]

    def work(index: int) -> int:
        if index < 3:
            for _ in range(10):
                flush_counters(batch_size=2)
            return 0
        for _ in range(60):
            for t in tenants:
                increment_usage(t.pk, "api_calls")
        return 1

    run_in_threads(6, work)
    flush_counters()
    for t in tenants:
        assert bucket_row(t).used == row(t).used == 3 * 60


# --- an empty script cache, a dropped connection -------------------------------------------------


def test_a_flushed_script_cache_is_filled_again(
    tenant: Tenant,
    private_redis: PrivateRedis,  # noqa: F811
    settings: Any,
) -> None:
    """A restarted Redis has no scripts: the first call loads the script and counts once.

    On a server of its own: flushing the shared server's scripts would fail other test runs'
    script calls at that moment."""
    settings.USAGE_LIMITS = redis_settings(private_redis.url, "uq")
    key = CounterKey(tenant.pk, "api_calls", MARCH)
    store().increment(key, 1)
    private_redis.client().script_flush()
    assert store().increment(key, 1).after == 2
    assert store().get(key) == 2


def test_a_dropped_connection_is_opened_again(tenant: Tenant, client: redis.Redis) -> None:
    key = CounterKey(tenant.pk, "api_calls", MARCH)
    store().increment(key, 1)
    # The server closes the store's connection (a restart, an idle timeout, a proxy). Only that
    # one: the server is shared with other test runs. On one thread the pool hands out the
    # connection it got back last, so CLIENT ID names the one the next command uses.
    dropped = store().client.client_id()
    assert client.client_kill_filter(_id=dropped) == 1
    assert store().increment(key, 1).after == 2
    assert store().get(key) == 2
    assert store().client.client_id() != dropped
    assert not store().breaker.is_open


def test_the_script_refuses_rules_whose_version_redis_was_told_moved(
    tenant: Tenant, client: redis.Redis
) -> None:
    from usage_limits.exceptions import StaleRules

    key = CounterKey(tenant.pk, "api_calls", MARCH)
    tenant.refresh_from_db()
    version = tenant.rules_version
    # Redis holds no copy yet: the database confirms the version, Redis copies it, it counts.
    assert store().consume(key, 1, 10, rules_version=version).applied
    rules = store().keys.rules(tenant.pk)
    assert client.hget(rules, "v") == str(version)
    # A change commits elsewhere: the database moves, Redis hears of it.
    Tenant.objects.filter(pk=tenant.pk).update(rules_version=version + 1)
    store().rules_changed([tenant.pk])
    with pytest.raises(StaleRules):
        store().consume(key, 1, 10, rules_version=version)
    assert store().get(key) == 1  # nothing counted under the old rules
    assert store().consume(key, 1, 10, rules_version=version + 1).after == 2


def test_a_version_read_before_a_change_is_never_copied_after_it(
    tenant: Tenant, client: redis.Redis
) -> None:
    """The race of a count that read the database just before a change committed: the copy it
    then writes must not land after the change's notice, or Redis would accept the old rules."""
    store().client  # noqa: B018  (registers the scripts)
    rules = store().keys.rules(tenant.pk)
    copy = store()._script("set_rules_version")
    epoch_seen = client.hget(rules, "e") or "0"  # the STALE reply's epoch
    store().rules_changed([tenant.pk])  # the change commits in between
    assert copy(keys=[rules], args=[epoch_seen, 123, 60]) == 0
    assert client.hget(rules, "v") is None
    assert copy(keys=[rules], args=[client.hget(rules, "e"), 124, 60]) == 1
