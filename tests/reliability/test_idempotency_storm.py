"""Idempotency storm: 50 concurrent deliveries of one event count once.

A client that retries (or a webhook delivered twice) sends the same idempotency key again, often
while the first delivery is still in flight. Whatever the interleaving, one delivery counts, the
other 49 are answered with the original outcome (``replayed``) and count nothing, and the ledger
holds one event. Both ``increment_usage`` (usage already happened) and ``consume`` (a request
that may be refused) are proved, over 20 storms each with a fresh tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from usage_limits.backends import CounterKey
from usage_limits.models import UsageEvent
from usage_limits.periods import current_period
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .figures import Figures, discrepancy
from .stores import StoreTarget
from .surfaces import CONSUME, INCREMENT, Admission, Surface

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERIES = 50
STORMS = 20
QUANTITY = 3


# The limit exactly the event's quantity: a delivery that sees another's count in flight is
# refused, and that refusal must never become the key's answer when the count it saw is undone
# (the Redis store counted before claiming the key: 10 of 40 storms answered 429 everywhere).
@pytest.mark.parametrize(
    ("operation", "limit"), [(INCREMENT, 100), (CONSUME, 100), (CONSUME, QUANTITY)]
)
def test_one_key_delivered_fifty_times_at_once_counts_once(
    operation: str,
    limit: int,
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    if operation not in surface.operations:
        pytest.skip(f"the {surface.name} surface does not offer {operation}")
    plan = plan_with_limits("STORM", api_calls=limit)
    crew = crew_of(DELIVERIES)
    failures: list[str] = []
    counted = stored_total = replayed_total = 0
    started = time.perf_counter()
    storms = surface.scaled(STORMS)
    for storm in range(storms):
        tenant_id = TenantFactory(plan=plan).pk
        event = f"evt_{storm:04d}_{operation}_{limit}"

        def work(_: int, tenant_id: int = tenant_id, event: str = event) -> Admission:
            return surface.call(operation, tenant_id, "api_calls", QUANTITY, idempotency_key=event)

        outcomes = crew.run(work)
        stored = store.stored(CounterKey(tenant_id, "api_calls", current_period("monthly")))
        originals = [o for o in outcomes if not o.replayed]
        replays = [o for o in outcomes if o.replayed]
        events = UsageEvent.objects.filter(tenant_id=tenant_id).count()
        counted += len(originals)
        stored_total += stored
        replayed_total += len(replays)
        problems = []
        if len(originals) != 1:
            problems.append(f"{len(originals)} deliveries counted")
        if stored != QUANTITY:
            problems.append(f"stored {stored}")
        if events != 1:
            problems.append(f"{events} ledger events")
        if {(o.admitted, o.used) for o in outcomes} != {(True, QUANTITY)}:
            problems.append(f"answers differ: {sorted({(o.admitted, o.used) for o in outcomes})}")
        if problems:
            failures.append(f"storm {storm}: " + "; ".join(problems))

    figures.record(
        "idempotency_storm",
        store.name,
        store.database_label(),
        variant=operation if limit != QUANTITY else f"{operation}, limit = quantity",
        surface=surface.name,
        storms=storms,
        threads=DELIVERIES,
        deliveries=storms * DELIVERIES,
        counted=counted,
        replayed=replayed_total,
        units=storms * QUANTITY,
        stored=stored_total,
        **discrepancy(storms * QUANTITY, stored_total),
        seconds=round(time.perf_counter() - started, 1),
    )
    assert not failures, "\n".join(failures)
