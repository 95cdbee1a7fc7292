"""Over-admission: concurrent consumers never get more than the limit, and nothing is lost.

200 trials; in each, 32 threads released by one barrier consume 1 unit each from a fresh tenant
whose limit is drawn between 1 and 40. Exactly ``min(limit, 32)`` may be admitted, the admitted
requests must have seen the distinct counter values 1..admitted (no two were told the same
count), every denial must say "quota exceeded", and the persisted counter must equal the number
admitted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from usage_limits.backends import CounterKey
from usage_limits.models import Plan
from usage_limits.periods import current_period
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .figures import Figures
from .stores import StoreTarget
from .surfaces import Admission, Surface

pytestmark = pytest.mark.django_db(transaction=True)

TRIALS = 200
CONSUMERS = 32
LIMITS = (1, 40)
SEED = 20260301


def test_concurrent_consumers_never_exceed_a_random_limit(
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    rng = random.Random(SEED)
    crew = crew_of(CONSUMERS)
    plans: dict[int, Plan] = {}
    failures: list[str] = []
    attempts = admitted_total = expected_total = stored_total = 0
    over = under = lost = doubled = 0
    started = time.perf_counter()
    for trial in range(TRIALS):
        limit = rng.randint(*LIMITS)
        if limit not in plans:
            plans[limit] = plan_with_limits(f"LIMIT{limit}", api_calls=limit)
        tenant_id = TenantFactory(plan=plans[limit]).pk

        def work(_: int, tenant_id: int = tenant_id) -> Admission:
            return surface.consume(tenant_id, "api_calls", 1)

        outcomes = crew.run(work)
        admitted = [o for o in outcomes if o.admitted]
        expected = min(limit, CONSUMERS)
        key = CounterKey(tenant_id, "api_calls", current_period("monthly"))
        stored = store.stored(key)
        seen = sorted(o.used for o in admitted if o.used is not None)

        attempts += len(outcomes)
        admitted_total += len(admitted)
        expected_total += expected
        stored_total += stored
        over += max(len(admitted) - expected, 0)
        under += max(expected - len(admitted), 0)
        lost += max(len(admitted) - stored, 0)
        doubled += max(stored - len(admitted), 0)
        problems = []
        if len(admitted) != expected:
            problems.append(f"admitted {len(admitted)}, expected {expected}")
        if stored != len(admitted):
            problems.append(f"stored {stored} but admitted {len(admitted)}")
        if seen and seen != list(range(1, len(admitted) + 1)):
            problems.append(f"admitted requests saw {seen}")
        if problems:
            failures.append(f"trial {trial} (limit {limit}): " + "; ".join(problems))

    figures.record(
        "over_admission",
        store.name,
        store.database_label(),
        surface=surface.name,
        trials=TRIALS,
        threads=CONSUMERS,
        attempts=attempts,
        expected_admitted=expected_total,
        admitted=admitted_total,
        stored=stored_total,
        over_admitted=over,
        under_admitted=under,
        lost=lost,
        doubled=doubled,
        failed_trials=len(failures),
        seconds=round(time.perf_counter() - started, 1),
    )
    assert not failures, f"{len(failures)} of {TRIALS} trials went wrong:\n" + "\n".join(
        failures[:20]
    )
