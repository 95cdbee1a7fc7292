"""Over-admission: concurrent consumers never get more than the limit, and nothing is lost.

200 trials; in each, 32 threads released by one barrier consume 1 unit each from a fresh tenant
whose limit is drawn between 1 and 40. Exactly ``min(limit, 32)`` may be admitted, the admitted
requests must have seen the distinct counter values 1..admitted (no two were told the same
count), every denial must say "quota exceeded", and the persisted counter must equal the number
admitted.

On a store that writes its counters behind to the database (Redis), the flush then runs once over
every trial's counter and each ``UsageRecord`` row must equal the counter in the store.
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
from .figures import Figures, discrepancy
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
    trials = surface.scaled(TRIALS)
    crew = crew_of(CONSUMERS)
    plans: dict[int, Plan] = {}
    failures: list[str] = []
    attempts = admitted_total = expected_total = stored_total = 0
    over = under = lost = doubled = 0
    keys: list[CounterKey] = []
    started = time.perf_counter()
    for trial in range(trials):
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
        keys.append(key)
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
    seconds = round(time.perf_counter() - started, 1)
    flushed = store.flush()
    mismatches = store.record_mismatches(keys) if flushed is not None else []

    figures.record(
        "over_admission",
        store.name,
        store.database_label(),
        variant="1 unit each",
        surface=surface.name,
        trials=trials,
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
        flushed=flushed,
        record_mismatches=None if flushed is None else len(mismatches),
        seconds=seconds,
    )
    assert not failures, f"{len(failures)} of {trials} trials went wrong:\n" + "\n".join(
        failures[:20]
    )
    assert not mismatches, "the flushed database copy differs:\n" + "\n".join(mismatches[:20])


MIXED_TRIALS = 50
MIXED_LIMITS = (5, 60)
QUANTITIES = (1, 5)


def test_concurrent_consumers_of_mixed_quantities_never_exceed_the_limit(
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    """32 threads ask for 1 to 5 units each: the admitted units fit, and no denial was unfair.

    Which requests win depends on the order, so the proof is: the counter equals the sum of the
    admitted quantities, it never passes the limit, and every denied request really did not fit
    in what was left at the end (otherwise a unit was refused that the limit allowed).
    """
    rng = random.Random(SEED + 1)
    trials = surface.scaled(MIXED_TRIALS)
    crew = crew_of(CONSUMERS)
    plans: dict[int, Plan] = {}
    failures: list[str] = []
    units_asked = units_admitted = stored_total = unfair = over = 0
    keys: list[CounterKey] = []
    started = time.perf_counter()
    for trial in range(trials):
        limit = rng.randint(*MIXED_LIMITS)
        asks = [rng.randint(*QUANTITIES) for _ in range(CONSUMERS)]
        if limit not in plans:
            plans[limit] = plan_with_limits(f"MIXED{limit}", api_calls=limit)
        tenant_id = TenantFactory(plan=plans[limit]).pk

        def work(index: int, tenant_id: int = tenant_id, asks: list[int] = asks) -> Admission:
            return surface.consume(tenant_id, "api_calls", asks[index])

        outcomes = crew.run(work)
        admitted = sum(q for q, o in zip(asks, outcomes, strict=True) if o.admitted)
        keys.append(CounterKey(tenant_id, "api_calls", current_period("monthly")))
        stored = store.stored(keys[-1])
        refused_but_fitting = [
            q for q, o in zip(asks, outcomes, strict=True) if not o.admitted and stored + q <= limit
        ]
        units_asked += sum(asks)
        units_admitted += admitted
        stored_total += stored
        unfair += len(refused_but_fitting)
        over += max(stored - limit, 0)
        if stored != admitted or stored > limit or refused_but_fitting:
            failures.append(
                f"trial {trial} (limit {limit}): admitted {admitted} units, stored {stored}, "
                f"refused although they fitted: {refused_but_fitting}"
            )
    seconds = round(time.perf_counter() - started, 1)
    flushed = store.flush()
    mismatches = store.record_mismatches(keys) if flushed is not None else []

    figures.record(
        "over_admission",
        store.name,
        store.database_label(),
        variant="quantities 1-5",
        surface=surface.name,
        trials=trials,
        threads=CONSUMERS,
        attempts=trials * CONSUMERS,
        units_asked=units_asked,
        admitted=units_admitted,
        stored=stored_total,
        over_admitted=over,
        **discrepancy(units_admitted, stored_total),
        unfair_denials=unfair,
        failed_trials=len(failures),
        flushed=flushed,
        record_mismatches=None if flushed is None else len(mismatches),
        seconds=seconds,
    )
    assert not failures, "\n".join(failures[:20])
    assert not mismatches, "the flushed database copy differs:\n" + "\n".join(mismatches[:20])
