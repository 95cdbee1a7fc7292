"""Threshold signals fire exactly once per level, even when 32 threads cross it together.

Each of 50 trials gives a fresh tenant a limit between 20 and 40 and a starting usage below
80 %, then 32 threads consume 1 unit each at once. Every warning level the counter passes
(80 % and 100 %) must be announced by exactly one ``threshold_crossed`` signal, and the denials
by exactly one ``quota_exceeded``, whichever threads happened to cross.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest

from usage_limits import set_usage, signals
from usage_limits.models import Plan
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .figures import Figures
from .stores import StoreTarget
from .surfaces import Admission, Surface

pytestmark = pytest.mark.django_db(transaction=True)

TRIALS = 50
THREADS = 32
WARNINGS = (80, 100)  # the default WARNING_THRESHOLDS
SEED = 80100


def expected_levels(before: int, after: int, limit: int) -> set[int]:
    """Levels passed on the way from ``before`` to ``after`` (at or above t % of the limit)."""
    return {
        t for t in WARNINGS if Fraction(before, limit) < Fraction(t, 100) <= Fraction(after, limit)
    }


def test_each_level_is_announced_once_under_concurrency(
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    rng = random.Random(SEED)
    received: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def on_threshold(sender: object, tenant_id: int, threshold: int, **kwargs: Any) -> None:
        with lock:
            received.append(("threshold", tenant_id, threshold))

    def on_exceeded(sender: object, tenant_id: int, **kwargs: Any) -> None:
        with lock:
            received.append(("exceeded", tenant_id, 0))

    crew = crew_of(THREADS)
    plans: dict[int, Plan] = {}
    expected: Counter[tuple[str, int, int]] = Counter()
    signals.threshold_crossed.connect(on_threshold)
    signals.quota_exceeded.connect(on_exceeded)
    trials = surface.scaled(TRIALS)
    started = time.perf_counter()
    try:
        for _ in range(trials):
            limit = rng.randint(20, 40)
            start = rng.randint(0, limit * 8 // 10 - 1)
            if limit not in plans:
                plans[limit] = plan_with_limits(f"WARN{limit}", api_calls=limit)
            tenant_id = TenantFactory(plan=plans[limit]).pk
            if start:
                set_usage(tenant_id, "api_calls", start)

            def work(_: int, tenant_id: int = tenant_id) -> Admission:
                return surface.consume(tenant_id, "api_calls", 1)

            outcomes = crew.run(work)
            assert sum(o.admitted for o in outcomes) == min(limit - start, THREADS)
            for level in expected_levels(start, min(limit, start + THREADS), limit):
                expected[("threshold", tenant_id, level)] += 1
            if start + THREADS > limit:
                expected[("exceeded", tenant_id, 0)] += 1
    finally:
        signals.threshold_crossed.disconnect(on_threshold)
        signals.quota_exceeded.disconnect(on_exceeded)

    got = Counter(received)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    missing = sum((expected - got).values())
    figures.record(
        "threshold_signals",
        store.name,
        store.database_label(),
        surface=surface.name,
        trials=trials,
        threads=THREADS,
        expected_signals=sum(expected.values()),
        signals=len(received),
        duplicates=duplicates,
        missing=missing,
        seconds=round(time.perf_counter() - started, 1),
    )
    assert got == expected, f"{duplicates} duplicate and {missing} missing announcements"
