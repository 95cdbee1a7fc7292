"""What daily usage history costs on the enforcement path: ``consume()`` with history on and off.

    python bench/history.py                                                # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x python bench/history.py
    DATABASE_URL=mysql://root@127.0.0.1:3306/x python bench/history.py     # MariaDB

With ``USAGE_LIMITS["HISTORY"]`` on (the default), every counted change also adds to today's
bucket in ``usage_limits_usagedailybucket``:

* PostgreSQL folds the bucket's upsert into the counter's statement (a data-modifying CTE): still
  one round trip. Goal: allowed consume within 1.3x of history off.
* SQLite and MariaDB run the upsert as a second statement in the same transaction, and open that
  transaction around the guarded UPDATE (BEGIN IMMEDIATE on SQLite; autocommit off and COMMIT on
  MariaDB). Expect the allowed path to cost up to about 2x there.

Denied requests write no bucket; on SQLite and MariaDB they still pay for the transaction, which
is measured too. Every figure is a median of interleaved rounds (off, on, off, on, ...).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import print_table, setup_database, time_calls

CALLS = 2000
ROUNDS = 7


def measure(
    candidates: dict[str, tuple[bool, Callable[[], object]]], *, calls: int, rounds: int
) -> dict[str, float]:
    """Median microseconds per call of each candidate, run with history switched on or off."""
    from django.conf import settings
    from django.test import override_settings

    def with_history(enabled: bool) -> override_settings:
        return override_settings(USAGE_LIMITS={**settings.USAGE_LIMITS, "HISTORY": enabled})

    for history, func in candidates.values():
        with with_history(history):
            for _ in range(200):
                func()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, (history, func) in candidates.items():
            with with_history(history):
                samples[name].append(time_calls(func, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    label = setup_database()
    from bench.engine import fresh_tables
    from usage_limits import consume
    from usage_limits.models import Plan, Tenant, UsageDailyBucket, UsageRecord
    from usage_limits.plans import sync_plans

    fresh_tables()
    sync_plans()
    plan = Plan.objects.get(code="BENCH")
    busy = Tenant.objects.create(name="Bench", slug="bench", plan=plan)
    consume(busy.pk, "api_calls")  # creates the period's row and today's bucket, warms the rules

    def allowed() -> object:
        return consume(busy.pk, "api_calls")

    figures = measure(
        {"history off": (False, allowed), "history on": (True, allowed)},
        calls=CALLS,
        rounds=ROUNDS,
    )
    print_table(
        f"[{label}] allowed consume(), history off vs on ({CALLS} calls x {ROUNDS} rounds)",
        figures,
        baseline="history off",
        goal="PostgreSQL folds the bucket into the same statement (goal: <= 1.3x); "
        "SQLite and MariaDB pay a second statement in a transaction",
    )

    full = Tenant.objects.create(name="Full", slug="full", plan=plan)
    consume(full.pk, "api_calls", 10**15)  # at its limit: every further call is denied

    def denied() -> object:
        return consume(full.pk, "api_calls")

    figures = measure(
        {"history off": (False, denied), "history on": (True, denied)},
        calls=CALLS,
        rounds=ROUNDS,
    )
    print_table(
        f"[{label}] denied consume(), history off vs on",
        figures,
        baseline="history off",
        goal="a denial writes no bucket",
    )
    counted = UsageRecord.objects.get(tenant=busy).used
    recorded = sum(UsageDailyBucket.objects.filter(tenant=busy).values_list("used", flat=True))
    print(f"busy tenant: counter {counted:,}, buckets {recorded:,} (history was on part-time)")
    fresh_tables()


if __name__ == "__main__":
    main()
