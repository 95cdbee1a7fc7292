"""What enforcement costs: ``consume()`` against a raw conditional UPDATE, and against history.

    python bench/engine.py                                            # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x python bench/engine.py

1. Per-call cost of ``usage_limits.consume`` (rules from the cache, one guarded statement) against
   the floor: the bare conditional ``UPDATE ... RETURNING`` on the same row, in the same run.
   Goal: within 1.2x.
2. The same ``consume`` with 0 and with 1,000,000 rows of past usage in the table. The check
   goes through the unique index on (tenant, feature, period_start), so the cost must not grow
   with history. Goal: ratio <= 1.1. The raw UPDATE is measured before and after too, as a control
   for machine drift.

Both measure the counter's path with daily history off: the history bucket's extra cost (nothing
more on PostgreSQL, one more statement elsewhere) is measured by ``bench/history.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import compare, print_table, setup_database

CALLS = 2000
ROUNDS = 7
HISTORY_TENANTS = 1000
HISTORY_PERIODS = 1000  # 1,000 tenants x 1,000 past daily periods = 1,000,000 rows


def fresh_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "usage_limits_usagealert",
            "usage_limits_usageevent",
            "usage_limits_usagereset",
            "usage_limits_usagedailybucket",
            "usage_limits_usagerecord",
            "usage_limits_tenantlimitoverride",
            "usage_limits_tenantmembership",
            "usage_limits_tenant",
            "usage_limits_planlimit",
            "usage_limits_plan",
        ):
            cursor.execute(f"DELETE FROM {table}")


def raw_update_factory(tenant_id: int):  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.utils import timezone

    from usage_limits.periods import current_period

    start = connection.ops.adapt_datetimefield_value(current_period("monthly").start)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    limit = 10**15
    if connection.vendor == "mysql":
        sql = (
            "UPDATE usage_limits_usagerecord SET used = LAST_INSERT_ID(used + %s), updated_at = %s "
            "WHERE tenant_id = %s AND feature = %s AND period_start = %s AND used + %s <= %s"
        )
    else:
        sql = (
            "UPDATE usage_limits_usagerecord SET used = used + %s, updated_at = %s "
            "WHERE tenant_id = %s AND feature = %s AND period_start = %s AND used + %s <= %s "
            "RETURNING used"
        )
    params = [1, now, tenant_id, "api_calls", start, 1, limit]
    cursor = connection.cursor()

    def raw_update() -> object:
        cursor.execute(sql, params)
        return cursor.lastrowid if connection.vendor == "mysql" else cursor.fetchone()

    return raw_update


def insert_history() -> None:
    from django.db import connection

    from usage_limits.models import Plan, Tenant

    plan = Plan.objects.get(code="BENCH")
    Tenant.objects.bulk_create(
        Tenant(name=f"History {i}", slug=f"history-{i}", plan=plan) for i in range(HISTORY_TENANTS)
    )
    columns = (
        "tenant_id, feature, period_key, period_start, period_end, used, created_at, updated_at"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO usage_limits_usagerecord ({columns}) "
                "SELECT t.id, 'api_calls', 'd' || g, "
                "TIMESTAMPTZ '2020-01-01' + g * INTERVAL '1 day', "
                "TIMESTAMPTZ '2020-01-02' + g * INTERVAL '1 day', 5, now(), now() "
                "FROM usage_limits_tenant t CROSS JOIN generate_series(1, %s) g",
                [HISTORY_PERIODS],
            )
            cursor.execute("ANALYZE usage_limits_usagerecord")
        elif connection.vendor == "mysql":
            cursor.execute(
                f"INSERT INTO usage_limits_usagerecord ({columns}) "
                "SELECT t.id, 'api_calls', CONCAT('d', s.seq), "
                "TIMESTAMP '2020-01-01' + INTERVAL s.seq DAY, "
                "TIMESTAMP '2020-01-02' + INTERVAL s.seq DAY, 5, NOW(), NOW() "
                f"FROM usage_limits_tenant t CROSS JOIN seq_1_to_{HISTORY_PERIODS} s"
            )
            cursor.execute("ANALYZE TABLE usage_limits_usagerecord")
        else:
            cursor.execute(
                f"INSERT INTO usage_limits_usagerecord ({columns}) "
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
                "SELECT t.id, 'api_calls', 'd' || g.n, "
                "datetime('2020-01-01', '+' || g.n || ' days'), "
                "datetime('2020-01-02', '+' || g.n || ' days'), 5, "
                "datetime('now'), datetime('now') FROM usage_limits_tenant t, g",
                [HISTORY_PERIODS],
            )
            cursor.execute("ANALYZE")
            # The million rows went through the write-ahead log: fold it back into the database
            # file, so the second half measures steady state rather than a log checkpointed
            # piecemeal by the statements being timed.
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def main() -> None:
    label = setup_database()
    from django.conf import settings
    from django.test import override_settings

    with override_settings(USAGE_LIMITS={**settings.USAGE_LIMITS, "HISTORY": False}):
        measure(label)


def measure(label: str) -> None:
    from usage_limits import consume
    from usage_limits.models import Plan, Tenant, UsageRecord
    from usage_limits.plans import sync_plans

    fresh_tables()
    sync_plans()
    tenant = Tenant.objects.create(name="Bench", slug="bench", plan=Plan.objects.get(code="BENCH"))
    consume(tenant.pk, "api_calls")  # creates the period's row, warms the rules cache
    raw_update = raw_update_factory(tenant.pk)

    def enforce() -> object:
        return consume(tenant.pk, "api_calls")

    figures = compare(
        {"raw conditional UPDATE": raw_update, "consume()": enforce}, calls=CALLS, rounds=ROUNDS
    )
    print_table(
        f"[{label}] consume() against the raw guarded UPDATE ({CALLS} calls x {ROUNDS} rounds)",
        figures,
        baseline="raw conditional UPDATE",
        goal="goal: consume() within 1.2x of the raw UPDATE",
    )

    insert_history()
    rows = UsageRecord.objects.count()
    after = compare(
        {"raw conditional UPDATE": raw_update, "consume()": enforce}, calls=CALLS, rounds=ROUNDS
    )
    history = {
        "consume(), 0 history rows": figures["consume()"],
        f"consume(), {rows - 1:,} history rows": after["consume()"],
        "raw UPDATE, 0 history rows (control)": figures["raw conditional UPDATE"],
        f"raw UPDATE, {rows - 1:,} history rows (control)": after["raw conditional UPDATE"],
    }
    print_table(
        f"[{label}] consume() with and without history",
        history,
        baseline="consume(), 0 history rows",
        goal="goal: consume() with 1,000,000 history rows within 1.1x of 0 rows",
    )
    fresh_tables()


if __name__ == "__main__":
    main()
