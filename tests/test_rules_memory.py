"""Rules that are never stale: what each process remembers of plans and tenants.

A process keeps the rules it read, each with the tenant's ``rules_version``; every change moves
that version in its own transaction, and the store's counting statement refuses rules whose
version is no longer the row's. So a change is enforced by every process at its next count,
whatever ``CACHES`` is, and nothing a process remembers survives a rolled-back change.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction

from tests.concurrency import run_in_threads
from tests.redis_service import REDIS_URL, redis_prefix, shared_redis  # noqa: F401
from usage_limits import check_limit, consume, get_usage
from usage_limits.caching import cache_key
from usage_limits.models import (
    Plan,
    PlanLimit,
    SubscriptionStatus,
    Tenant,
    TenantLimitOverride,
)
from usage_limits.rules import forget_all
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from . import processes

pytestmark = pytest.mark.django_db


def lower_the_limit(tenant: Tenant, limit: int) -> None:
    row = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
    row.limit = limit
    row.save()


def add_an_override(tenant: Tenant, limit: int) -> None:
    TenantLimitOverride.objects.create(tenant=tenant, feature="api_calls", limit=limit)


def move_to_a_smaller_plan(tenant: Tenant, limit: int) -> None:
    tenant.plan = plan_with_limits("SMALL", api_calls=limit)
    tenant.save()


def cancel(tenant: Tenant, limit: int) -> None:
    tenant.subscription_status = SubscriptionStatus.CANCELED
    tenant.save()


CHANGES: dict[str, Callable[[Tenant, int], None]] = {
    "plan limit": lower_the_limit,
    "override": add_an_override,
    "tenant's plan": move_to_a_smaller_plan,
    "subscription status": cancel,
}

CACHE_BACKENDS = {
    "per process (LocMem)": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "none (Dummy)": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    "shared (Redis)": {"BACKEND": "django.core.cache.backends.redis.RedisCache"},
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("backend", CACHE_BACKENDS)
@pytest.mark.django_db(transaction=True)
def test_a_change_made_in_another_process_is_enforced_at_the_next_count(
    change: str, backend: str
) -> None:
    cache = dict(CACHE_BACKENDS[backend])
    if "redis" in cache["BACKEND"]:
        shared_redis()  # skips (or fails under .ci/run) without Redis
        cache["LOCATION"] = REDIS_URL
    change_in_another_process(change, cache)


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.django_db(transaction=True)
def test_a_change_made_in_another_process_is_enforced_by_the_redis_store(
    change: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("redis_prefix")  # the store counts in Redis under a prefix of its own
    change_in_another_process(change, CACHE_BACKENDS["per process (LocMem)"])


def change_in_another_process(change: str, cache: dict[str, Any]) -> None:
    """A process counts, this one changes the tenant's rules, the process counts again."""
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=100))
    context = multiprocessing.get_context("spawn")
    warmed, changed, results = context.Event(), context.Event(), context.Queue()
    child = context.Process(
        target=processes.consume_before_and_after_a_change,
        args=(
            connection.settings_dict["NAME"],
            dict(django_settings.USAGE_LIMITS),
            {"default": cache},
            tenant.pk,
            warmed,
            changed,
            results,
        ),
    )
    child.start()
    try:
        assert warmed.wait(60), "the other process did not start"
        CHANGES[change](tenant, 1)  # the other process has used 1 of it already
        changed.set()
        allowed, limit, reason = results.get(timeout=60)
    finally:
        child.join(60)
    assert not allowed
    if change == "subscription status":
        assert reason == "subscription_inactive"
    else:
        assert (limit, reason) == (1, "quota_exceeded")


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.django_db(transaction=True)
def test_a_flood_of_counts_while_a_change_commits_never_uses_the_old_rules(change: str) -> None:
    """8 threads count while the change commits: every count that starts after the commit is
    decided under the new rules, and exactly the new limit is admitted in all."""
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=100_000))
    consume(tenant, "api_calls")  # this process remembers the old rules from here on
    new_limit = 400
    committed_at: list[float] = []
    stop = time.monotonic() + 60

    def work(index: int) -> list[tuple[float, bool, int | None]]:
        seen: list[tuple[float, bool, int | None]] = []
        if index == 0:
            time.sleep(0.05)
            with transaction.atomic():
                CHANGES[change](Tenant.objects.get(pk=tenant.pk), new_limit)
            committed_at.append(time.monotonic())
            return seen
        while time.monotonic() < stop:
            started = time.monotonic()
            decision = consume(tenant.pk, "api_calls")
            seen.append((started, decision.allowed, decision.limit))
            if committed_at and started > committed_at[0] and not decision.allowed:
                break  # the new rules are full (or refuse everything)
        return seen

    decisions = [d for seen in run_in_threads(9, work) for d in seen]
    after = [d for d in decisions if d[0] > committed_at[0]]
    before = [d for d in decisions if d[0] <= committed_at[0]]
    assert after, "no count started after the change committed"
    used = get_usage(tenant).feature("api_calls").used
    if change == "subscription status":
        assert not any(allowed for _, allowed, _ in after)
        assert used == 1 + sum(allowed for _, allowed, _ in before)
    else:
        assert {limit for _, _, limit in after} == {new_limit}
        # Up to the new limit after the change (or nothing more, if the old rules had let the
        # counter pass it already), never past it.
        assert used == max(new_limit, 1 + sum(allowed for _, allowed, _ in before))
    assert used == 1 + sum(allowed for _, allowed, _ in decisions)  # and every count is there


def test_forget_all_rereads_bulk_changes(tenant: Tenant) -> None:
    assert consume(tenant, "api_calls").limit == 100
    PlanLimit.objects.filter(plan=tenant.plan, feature="api_calls").update(limit=3)
    Tenant.objects.filter(pk=tenant.pk).update(subscription_status="canceled")
    forget_all()
    decision = check_limit(tenant, "api_calls")
    assert decision.limit == 3
    assert not decision.allowed
    assert not consume(tenant, "api_calls").allowed


def test_two_databases_sharing_a_cache_never_share_its_keys(settings: Any) -> None:
    here = cache_key("exceeded", 1, "api_calls", 0)
    original = connection.settings_dict["NAME"]
    try:
        connection.settings_dict["NAME"] = f"{original}_other"
        there = cache_key("exceeded", 1, "api_calls", 0)
    finally:
        connection.settings_dict["NAME"] = original
    assert here != there
    assert cache_key("exceeded", 1, "api_calls", 0) == here


class _ActionFailed(Exception):
    pass


@transaction.atomic
def _change_then_fail(tenant: Tenant, change: str, other_plan: Plan) -> None:
    """An operator's action that changes the rules, reads them, then fails and rolls back."""
    if change == "limit":
        limit = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
        limit.limit = 1000
        limit.save()
    elif change == "override":
        TenantLimitOverride.objects.create(tenant=tenant, feature="api_calls", limit=1000)
    else:
        tenant.plan = other_plan
        tenant.save()
    # Read inside the transaction (an admin page rendering the new usage, say): the uncommitted
    # change is visible here, as it should be.
    assert check_limit(tenant, "api_calls", 100).allowed
    assert consume(tenant, "api_calls").allowed  # counted (and rolled back), rules remembered
    raise _ActionFailed  # ...and then the action fails: all of it rolls back


@pytest.mark.parametrize("change", ["limit", "override", "tenant plan"])
@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_is_never_enforced(change: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=5))
    other_plan = plan_with_limits("BIG", api_calls=1000)
    assert not check_limit(tenant, "api_calls", 100).allowed
    with pytest.raises(_ActionFailed):
        _change_then_fail(tenant, change, other_plan)
    # What the database holds is what is enforced, now and in later checks.
    assert not check_limit(tenant, "api_calls", 100).allowed
    assert not consume(tenant, "api_calls", 100).allowed
    assert check_limit(tenant, "api_calls").limit == 5


@pytest.mark.django_db(transaction=True)
def test_a_flood_while_the_scheduled_reset_job_commits_counts_in_the_new_period() -> None:
    """Seen before: after the job, a process kept the tenant's pre-reset rules (a reload raced
    the job's commit) and denied thousands of requests against the closed period."""
    import datetime as dt

    import time_machine

    from usage_limits.models import ResetMode
    from usage_limits.resets import reset_expired

    march_15 = dt.datetime(2026, 3, 15, 12, tzinfo=dt.UTC)
    with time_machine.travel(march_15, tick=False) as clock:
        tenant = TenantFactory(
            plan=plan_with_limits("FREE", api_calls=50), reset_mode=ResetMode.SCHEDULED
        )
        reset_expired()  # pins the period being counted: March
        consume(tenant, "api_calls", 50)  # March is full; this process remembers the rules
        clock.move_to(dt.datetime(2026, 4, 2, 9, tzinfo=dt.UTC))  # the job has not run yet
        assert not consume(tenant, "api_calls").allowed
        committed_at: list[float] = []
        stop = time.monotonic() + 60

        def work(index: int) -> list[tuple[float, bool, str]]:
            seen: list[tuple[float, bool, str]] = []
            if index == 0:
                time.sleep(0.05)
                assert reset_expired().moved == 1
                committed_at.append(time.monotonic())
                return seen
            while time.monotonic() < stop:
                started = time.monotonic()
                decision = consume(tenant.pk, "api_calls")
                seen.append((started, decision.allowed, decision.period.key))
                if committed_at and started > committed_at[0] and not decision.allowed:
                    break  # April is full
            return seen

        decisions = [d for seen in run_in_threads(9, work) for d in seen]
        after = [d for d in decisions if d[0] > committed_at[0]]
        assert after, "no count started after the job committed"
        assert {period for _, _, period in after} == {"2026-04"}
        assert sum(allowed for _, allowed, _ in decisions) == 50
        assert get_usage(tenant).feature("api_calls").used == 50
