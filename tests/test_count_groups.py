"""Concurrent counts of one process on one counter share a statement (backends/grouping.py).

The first tests drive :class:`CountGroups` with a counter kept in memory, so that the moment a
group forms is under the test's control; the others run real threads against the database of
this run, with the counter's row held locked from another connection while the group forms.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection, transaction

from usage_limits import consume, get_usage, increment_usage
from usage_limits.backends import grouping
from usage_limits.backends.base import CounterChange
from usage_limits.backends.grouping import CountGroups
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import Tenant, UsageRecord
from usage_limits.testing.factories import TenantFactory, plan_with_limits


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


class MemoryCounter:
    """A guarded counter whose first change waits until the test releases it."""

    def __init__(self) -> None:
        self.used = 0
        self.calls: list[tuple[int, int]] = []
        self.release = threading.Event()
        self.fail_on: int | None = None  # a quantity whose change raises

    def apply(self, quantity: int, limit: int) -> CounterChange:
        if not self.calls:
            self.release.wait(10)
        self.calls.append((quantity, limit))
        if quantity == self.fail_on:
            raise StoreUnavailable("the database went away")
        before = self.used
        if before + quantity > limit:
            return CounterChange(applied=False, before=before, after=before)
        self.used += quantity
        return CounterChange(applied=True, before=before, after=self.used)


def count_in_threads(
    groups: CountGroups, counter: MemoryCounter, requests: list[tuple[int, int]]
) -> list[Any]:
    """The first request is sent alone and held; the rest arrive meanwhile; then release."""
    results: list[Any] = [None] * len(requests)

    def run(index: int) -> None:
        quantity, limit = requests[index]
        try:
            results[index] = groups.consume("counter", quantity, limit, counter.apply)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    threads[0].start()
    wait_until(lambda: groups._waiting.get("counter") == [])  # the first one is sending
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: groups.waiting() == len(requests) - 1)
    counter.release.set()
    for thread in threads:
        thread.join(10)
    assert groups.waiting() == 0
    assert "counter" not in groups._waiting  # idle again
    return results


def test_counts_arriving_while_one_is_sent_go_out_as_one_change() -> None:
    groups, counter = CountGroups(), MemoryCounter()
    requests = [(1, 100), (2, 100), (3, 100), (4, 100)]
    results = count_in_threads(groups, counter, requests)
    assert counter.calls == [(1, 100), (9, 100)]  # the first alone, then the other three
    assert counter.used == 10
    # Each has its own share, as if they had run one after the other.
    assert all(r.after - r.before == q for r, (q, _) in zip(results, requests, strict=True))
    shares = sorted((r.before, r.after) for r in results)
    assert [s[0] for s in shares[1:]] == [s[1] for s in shares[:-1]]
    assert shares[0][0] == 0
    assert shares[-1][1] == 10


def test_a_group_whose_total_does_not_fit_runs_one_by_one_and_admits_exactly() -> None:
    groups, counter = CountGroups(), MemoryCounter()
    results = count_in_threads(groups, counter, [(2, 4), (1, 4), (1, 4), (1, 4)])
    assert counter.calls[:2] == [(2, 4), (3, 4)]  # the group's total is refused...
    assert counter.calls[2:] == [(1, 4)] * 3  # ...so its three counts run one by one
    assert [r.applied for r in results].count(True) == 3
    assert counter.used == 4


def test_a_group_whose_total_passes_the_limit_is_not_even_tried() -> None:
    groups, counter = CountGroups(), MemoryCounter()
    results = count_in_threads(groups, counter, [(1, 3)] * 5)
    assert counter.calls == [(1, 3)] * 5
    assert sum(r.applied for r in results) == 3
    assert counter.used == 3


def test_counts_checked_against_different_limits_run_one_by_one() -> None:
    groups, counter = CountGroups(), MemoryCounter()
    results = count_in_threads(groups, counter, [(1, 100), (1, 100), (1, 5)])
    assert counter.calls[0] == (1, 100)
    assert sorted(counter.calls[1:]) == [(1, 5), (1, 100)]
    assert all(r.applied for r in results)
    assert counter.used == 3


def test_an_error_reaches_every_member_without_a_result_and_the_counter_recovers() -> None:
    groups, counter = CountGroups(), MemoryCounter()
    counter.fail_on = 4  # the group's statement (1 + 3) fails
    results = count_in_threads(groups, counter, [(5, 100), (1, 100), (3, 100)])
    assert results[0].after == 5
    assert all(isinstance(r, StoreUnavailable) for r in results[1:])
    assert counter.used == 5  # nothing of the failed group was counted
    assert groups.consume("counter", 2, 100, counter.apply).after == 7


# --- against the database --------------------------------------------------------------------


@pytest.fixture
def tenant(db: None) -> Tenant:
    return TenantFactory(plan=plan_with_limits("GROUPS", api_calls=1000))


class RowLock:
    """The tenant's counter row held (locked) by another connection until ``release``."""

    def __init__(self, tenant: Tenant) -> None:
        self.held = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(tenant,))

    def _hold(self, tenant: Tenant) -> None:
        try:
            # On SQLite the IMMEDIATE transaction itself takes the database's write lock.
            with transaction.atomic():
                UsageRecord.objects.select_for_update().get(tenant=tenant).save()
                self.held.set()
                self.released.wait(10)
        finally:
            connection.close()

    def __enter__(self) -> RowLock:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.thread.join(10)


# The counter's guarded UPDATE (MariaDB's returns the new value through LAST_INSERT_ID).
GUARDED_ADD = re.compile(r"SET used = (LAST_INSERT_ID\()?used \+")


@dataclass
class Counting:
    """Threads that consume once each, and what their own connections sent."""

    tenant: Tenant
    count: int
    atomic: bool = False
    count_with: Callable[..., Any] = consume  # or increment_usage
    statements: list[str] = field(default_factory=list)  # the guarded UPDATEs
    decisions: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.threads = [threading.Thread(target=self._run) for _ in range(self.count)]

    def _note(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if GUARDED_ADD.search(sql):
            self.statements.append(sql)
        return execute(sql, params, many, context)

    def _run(self) -> None:
        try:
            with connection.execute_wrapper(self._note):
                if self.atomic:
                    with transaction.atomic():
                        self.decisions.append(self.count_with(self.tenant.pk, "api_calls"))
                else:
                    self.decisions.append(self.count_with(self.tenant.pk, "api_calls"))
        finally:
            connection.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)


@pytest.mark.django_db(transaction=True)
def test_threads_that_meet_on_a_busy_counter_send_one_statement(tenant: Tenant) -> None:
    consume(tenant.pk, "api_calls")  # the period's row exists
    counting = Counting(tenant, 6)
    with RowLock(tenant):
        counting.threads[0].start()
        time.sleep(0.2)  # it waits for the row in the database
        for thread in counting.threads[1:]:
            thread.start()
        wait_until(lambda: grouping.waiting() == 5)
    counting.join()
    assert len(counting.statements) == 2  # the first count alone, then the five that waited
    assert sorted(d.used for d in counting.decisions) == [2, 3, 4, 5, 6, 7]
    assert get_usage(tenant).feature("api_calls").used == 7


@pytest.mark.django_db(transaction=True)
def test_recorded_usage_is_grouped_too_but_never_with_guarded_counts(tenant: Tenant) -> None:
    consume(tenant.pk, "api_calls")
    first = Counting(tenant, 1)
    consumes = Counting(tenant, 2)
    increments = Counting(tenant, 4, count_with=increment_usage)
    with RowLock(tenant):
        first.threads[0].start()
        time.sleep(0.2)  # held by the row lock
        for thread in consumes.threads + increments.threads:
            thread.start()
        # Two consumes wait behind the first; of the increments, one is sent (and held by the
        # row), three wait behind it: never in a group sent with a guard, or without one.
        wait_until(lambda: grouping.waiting() == 5)
    for counting in (first, consumes, increments):
        counting.join()
    assert len(consumes.statements) == 1
    assert len(increments.statements) == 2
    assert all(d.allowed for d in consumes.decisions + increments.decisions)
    assert get_usage(tenant).feature("api_calls").used == 8


@pytest.mark.django_db(transaction=True)
def test_without_grouping_every_count_sends_its_own_statement(
    tenant: Tenant, settings: Any
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "GROUP_CONCURRENT_COUNTS": False}
    consume(tenant.pk, "api_calls")
    counting = Counting(tenant, 4)
    with RowLock(tenant):
        for thread in counting.threads:
            thread.start()
        time.sleep(0.3)
        assert grouping.waiting() == 0
    counting.join()
    assert len(counting.statements) == 4
    assert sorted(d.used for d in counting.decisions) == [2, 3, 4, 5]


@pytest.mark.django_db(transaction=True)
def test_counts_inside_a_transaction_are_never_grouped(tenant: Tenant, vendor: str) -> None:
    if vendor == "sqlite":
        pytest.skip("SQLite: a second transaction waits for the write lock before it counts")
    consume(tenant.pk, "api_calls")
    outside, inside = Counting(tenant, 1), Counting(tenant, 3, atomic=True)
    with RowLock(tenant):
        outside.threads[0].start()
        time.sleep(0.2)  # the count outside a transaction is being sent, held by the row lock
        for thread in inside.threads:
            thread.start()
        time.sleep(0.3)
        assert grouping.waiting() == 0  # the counts inside transactions did not join it
    outside.join()
    inside.join()
    assert len(inside.statements) == 3  # each sent its own statement
    assert get_usage(tenant).feature("api_calls").used == 5
