"""Lost updates: 8 threads x 2,000 ``increment_usage`` end at exactly 16,000.

Every increment must also have been told a different counter value: the values the 16,000
calls saw are exactly 1..16,000, so no two read-modify-writes overlapped (a lost update would
show as a repeated value and a short total).

On a store that writes its counters behind to the database (Redis), the flush then copies the
counter and the ``UsageRecord`` row must hold the same 16,000.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from usage_limits.backends import CounterKey
from usage_limits.periods import current_period
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .figures import Figures, discrepancy
from .stores import StoreTarget
from .surfaces import INCREMENT, Surface

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
INCREMENTS = 2_000


def test_concurrent_increments_lose_nothing(
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    # A small limit on purpose: recorded usage is never refused, so it runs far into overage.
    tenant_id = TenantFactory(plan=plan_with_limits("SMALL", api_calls=10)).pk
    crew = crew_of(THREADS)
    if INCREMENT not in surface.operations:
        pytest.skip(f"the {surface.name} surface does not record usage after the fact")

    increments = surface.scaled(INCREMENTS)

    def work(_: int) -> list[int | None]:
        return [surface.call(INCREMENT, tenant_id, "api_calls", 1).used for _ in range(increments)]

    started = time.perf_counter()
    seen = sorted(value or 0 for values in crew.run(work) for value in values)
    elapsed = time.perf_counter() - started
    key = CounterKey(tenant_id, "api_calls", current_period("monthly"))
    stored = store.stored(key)
    flushed = store.flush()
    mismatches = store.record_mismatches([key]) if flushed is not None else []
    expected = THREADS * increments
    repeated = len(seen) - len(set(seen))
    figures.record(
        "lost_updates",
        store.name,
        store.database_label(),
        surface=surface.name,
        threads=THREADS,
        units=expected,
        stored=stored,
        **discrepancy(expected, stored),
        repeated_values=repeated,
        flushed=flushed,
        record_mismatches=None if flushed is None else len(mismatches),
        seconds=round(elapsed, 1),
        per_second=round(expected / elapsed),
    )
    assert stored == expected
    assert seen == list(range(1, expected + 1)), f"{repeated} values were reported twice"
    assert not mismatches, mismatches
