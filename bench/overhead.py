"""What enforcement adds to a request, measured in-process against a baseline of the same run.

    python bench/overhead.py                      # SQLite (a temporary file, WAL)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python bench/overhead.py

Every scenario is the same tiny JSON view called through ``RequestFactory`` (no HTTP, no
middleware), so the differences are what each way of limiting costs:

* plain view: the baseline;
* ``@require_quota``: the tenant already known to the request (as after a middleware or an
  API-key lookup), one atomic ``consume``;
* ``@require_quota`` with the default membership resolver: plus the query that finds the user's
  tenant;
* DRF ``APIView`` without and with ``HasQuota``;
* django-ratelimit's ``@ratelimit`` (a cache counter, here the local-memory cache);
* the seeds' check-then-increment in the view: a read, a compare, an upsert (not atomic: it
  over-admits under concurrency), written with the ORM as a Django app would, and with raw SQL;
* the engine's ``consume()`` called directly, to split the decorator's cost from the engine's;
* one raw conditional ``UPDATE`` on its own: the floor of any exact database-backed limit;
* the hand-written minimum: the view running that ``UPDATE`` with ``RETURNING`` on the driver's
  own cursor and setting the two RateLimit fields from the value it returns, as the least any
  exact enforcement must do (no tenant, plan, period or thresholds);
* the hand-written minimum with the parts of the engine no correct enforcement can skip: the
  tenant's rules from the engine's cache (a plan change applies at the next request), the
  subscription check, the period, the ``Decision`` and the RateLimit fields built from it (still
  no thresholds, signals, callbacks or error handling);
* the plain view running that ``UPDATE``: the plain view plus the floor, measured together.

Goal 1 compares the enforced view with the plain view plus 1.2x the floor, computed from the two
separate figures and, beside it, from the figure measured together. They differ because costs
measured apart do not add up: called back to back, the floor keeps the database's server process
(or, in-process, the CPU's caches) busy with nothing else, whereas a view's work between two
statements lets the server process go to sleep and makes the next statement wake it first. Every
enforced request pays that, and so does the plain view running the ``UPDATE``.

Daily history is off, as in ``bench/engine.py``: the enforced views then run the same single
guarded UPDATE as the floor, and ``bench/history.py`` measures what the history bucket adds.

Scenarios are interleaved round by round and each figure is the best of the rounds' means (as
``timeit`` advises: slower rounds measure other processes), so drift on a shared machine hits all
of them alike. Commits are not flushed to disk (SQLite ``synchronous=NORMAL`` in WAL mode,
PostgreSQL ``synchronous_commit=off``): an fsync per commit would cost the same in every writing
scenario and drown the differences being measured. The database is created for the run and dropped
after it (``test_`` prefix, as Django's test runner does).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 25))
CALLS = int(os.environ.get("BENCH_CALLS", 150))
HUGE = 10**15  # a limit no run reaches: every call is allowed and counted


def configure() -> None:
    import django
    import environ
    from django.conf import settings

    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tempfile.gettempdir()}/bench_usage.db"
    database = environ.Env.db_url_config(url)
    if database["ENGINE"].endswith("sqlite3"):
        database["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            # WAL with synchronous=NORMAL, as recommended for WAL in production: a commit
            # then costs no fsync, so the figures measure work rather than the disk.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        database["TEST"] = {"NAME": f"{tempfile.gettempdir()}/test_bench_usage.db"}
    elif database["ENGINE"].endswith("postgresql"):
        # Likewise: no WAL flush per commit, so the figures measure round trips and work.
        database.setdefault("OPTIONS", {})["options"] = "-c synchronous_commit=off"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",  # noqa: S106
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        DATABASES={"default": database},
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "usage_limits",
        ],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        USAGE_LIMITS={
            "FEATURES": {"api_calls": {"kind": "metered", "period": "monthly"}},
            "PLANS": {"BENCH": {"api_calls": HUGE}},
            "TENANT_RESOLVER": "bench.overhead.tenant_on_request",
            # The counter's path alone, as in bench/engine.py: the daily history bucket's cost
            # (nothing more on PostgreSQL, one statement more elsewhere) is bench/history.py's.
            "HISTORY": False,
        },
    )
    django.setup()


def tenant_on_request(request: Any) -> Any:
    """The tenant a middleware or API-key lookup already found; else the default resolver."""
    known = getattr(request, "bench_tenant", None)
    if known is not None:
        return known
    # Imported here because this module loads before Django is set up; only this branch needs it.
    from usage_limits.tenancy import resolve_tenant_from_membership

    return resolve_tenant_from_membership(request)


def build_scenarios(tenant: Any, user: Any) -> dict[str, Callable[[], Any]]:
    from django.db import connection
    from django.db.models import F
    from django.http import JsonResponse
    from django.test import RequestFactory
    from django.utils import timezone
    from django_ratelimit.decorators import ratelimit
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    from usage_limits.decorators import require_quota
    from usage_limits.drf import HasQuota
    from usage_limits.engine import consume, period_for
    from usage_limits.models import UsageRecord
    from usage_limits.responses import ratelimit_headers
    from usage_limits.results import Decision
    from usage_limits.rules import tenant_rules

    def plain(request: Any) -> Any:
        return JsonResponse({"success": True})

    quota = require_quota("api_calls")(plain)

    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    start = timezone.now().replace(year=2000)
    for feature in ("floor", "seed", "seed_orm"):
        UsageRecord.objects.create(
            tenant=tenant,
            feature=feature,
            period_key="bench",
            period_start=start,
            used=0,
            created_at=start,
            updated_at=start,
        )
    start_param = connection.ops.adapt_datetimefield_value(start)
    consume(tenant, "api_calls")  # creates this period's counter row, which the scenarios update
    where = "tenant_id = %s AND feature = %s AND period_start = %s"
    guarded = f"UPDATE {table} SET used = used + %s WHERE {where} AND used + %s <= %s"
    read = f"SELECT used FROM {table} WHERE {where}"
    if connection.vendor == "mysql":
        upsert = (
            f"INSERT INTO {table} (tenant_id, feature, period_key, period_start, used, "
            "created_at, updated_at) VALUES (%s, %s, 'bench', %s, 1, %s, %s) "
            "ON DUPLICATE KEY UPDATE used = used + 1"
        )
    else:
        upsert = (
            f"INSERT INTO {table} (tenant_id, feature, period_key, period_start, used, "
            "created_at, updated_at) VALUES (%s, %s, 'bench', %s, 1, %s, %s) "
            "ON CONFLICT (tenant_id, feature, period_start) DO UPDATE SET used = "
            f"{table}.used + 1"
        )

    def raw_update() -> None:
        with connection.cursor() as cursor:
            cursor.execute(guarded, [1, tenant.pk, "floor", start_param, 1, HUGE])

    # The least any exact enforcement can do, written by hand for this one view: the guarded
    # UPDATE returning the new value, on the driver's own cursor (no Django cursor wrapper, as the
    # store runs it), and the two RateLimit fields from that value. No tenant lookup, no plan, no
    # period arithmetic, no thresholds: what is left for all of those is the gap to goal 1.
    if connection.vendor == "mysql":  # no RETURNING: the new value comes back as lastrowid
        returning = guarded.replace("used = used + %s", "used = LAST_INSERT_ID(used + %s)")
    else:
        returning = f"{guarded} RETURNING used"
    if connection.vendor == "sqlite":
        returning = returning.replace("%s", "?")
    window = 30 * 24 * 3600
    policy = f'"api_calls";q={HUGE};w={window}'
    reset_at = time.time() + window
    driver_cursors: list[Any] = []

    def update_returning(params: tuple[Any, ...]) -> int:
        """The guarded UPDATE on a driver cursor kept across calls; the counter's new value."""
        if not driver_cursors:
            connection.ensure_connection()
            driver_cursors.append(connection.connection.cursor())
        driver_cursor = driver_cursors[0]
        driver_cursor.execute(returning, params)
        if connection.vendor == "mysql":
            return int(driver_cursor.lastrowid)
        (used,) = driver_cursor.fetchone()
        return int(used)

    def minimum(request: Any) -> Any:
        used = update_returning((1, tenant.pk, "floor", start_param, 1, HUGE))
        response = plain(request)
        response["RateLimit-Policy"] = policy
        response["RateLimit"] = f'"api_calls";r={HUGE - used};t={int(reset_at - time.time())}'
        return response

    # The same by hand on the engine's own parts, for the one case measured here (an allowed,
    # unbilled count with no key): the tenant's rules from the engine's cache (so a plan change
    # applies at the next request, as the issue requires), the subscription check, the period,
    # the guarded UPDATE on the kept driver cursor, the Decision and the RateLimit fields built
    # from it. No thresholds, signals, callbacks, grouping, error handling or updated_at: what
    # @require_quota does on top of this is the rest of its cost.
    period_starts: dict[Any, Any] = {}

    def minimum_with_rules(request: Any) -> Any:
        rules = tenant_rules(request.bench_tenant)
        rule = rules.rule("api_calls")
        if not rules.subscription_allows_use():
            return JsonResponse({"success": False}, status=402)
        period = period_for(rules, rule)
        period_start = period_starts.get(period.start)
        if period_start is None:
            period_start = period_starts[period.start] = connection.ops.adapt_datetimefield_value(
                period.start
            )
        used = update_returning((1, rules.tenant_id, "api_calls", period_start, 1, rule.limit))
        decision = Decision(
            allowed=True,
            tenant_id=rules.tenant_id,
            plan=rules.plan_code,
            feature="api_calls",
            kind=rule.kind,
            quantity=1,
            used_before=used - 1,
            used=used,
            limit=rule.limit,
            period=period,
        )
        response = plain(request)
        for field, value in ratelimit_headers(decision).items():
            response[field] = value
        return response

    def plain_with_update(request: Any) -> Any:
        # The plain view plus the floor, measured together: the sum the goal allows for.
        raw_update()
        return plain(request)

    def seeds_orm(request: Any) -> Any:
        # The seeds' checkLimit() then incrementUsage() as a Django app writes them with the ORM:
        # read, compare (the limit is in the code, as in the seeds), then update-or-create.
        counter = UsageRecord.objects.filter(tenant=tenant, feature="seed_orm", period_start=start)
        current = counter.values_list("used", flat=True).first() or 0
        if current + 1 > HUGE:
            return JsonResponse({"success": False}, status=429)
        response = plain(request)
        if not counter.update(used=F("used") + 1):
            UsageRecord.objects.create(
                tenant=tenant,
                feature="seed_orm",
                period_key="bench",
                period_start=start,
                used=1,
                created_at=start,
                updated_at=start,
            )
        return response

    def seeds_pattern(request: Any) -> Any:
        # The same with hand-written SQL: one SELECT, one INSERT ... ON CONFLICT.
        with connection.cursor() as cursor:
            cursor.execute(read, [tenant.pk, "seed", start_param])
            row = cursor.fetchone()
            if (row[0] if row else 0) + 1 > HUGE:
                return JsonResponse({"success": False}, status=429)
            response = plain(request)
            cursor.execute(upsert, [tenant.pk, "seed", start_param, start_param, start_param])
        return response

    limited = ratelimit(key="user", rate=f"{HUGE}/d", block=True)(plain)

    class PlainAPI(APIView):
        def get(self, request: Any) -> Response:
            return Response({"success": True})

    class QuotaAPI(PlainAPI):
        permission_classes = [HasQuota]
        quota_feature = "api_calls"

    plain_api, quota_api = PlainAPI.as_view(), QuotaAPI.as_view()
    rf, arf = RequestFactory(), APIRequestFactory()

    def django_request() -> Any:
        request = rf.get("/bench/")
        request.user = user
        request.bench_tenant = tenant
        return request

    def drf_request() -> Any:
        request = arf.get("/bench/")
        force_authenticate(request, user)
        request.bench_tenant = tenant
        return request

    def quota_with_membership() -> Any:
        request = rf.get("/bench/")
        request.user = user
        return quota(request)

    return {
        "plain view (baseline)": lambda: plain(django_request()),
        "plain view running the raw UPDATE": lambda: plain_with_update(django_request()),
        "@require_quota (tenant known)": lambda: quota(django_request()),
        "hand-written minimum (see below)": lambda: minimum(django_request()),
        "hand-written, with plan and period": lambda: minimum_with_rules(django_request()),
        "@require_quota (membership resolver)": quota_with_membership,
        "DRF APIView, no permission": lambda: plain_api(drf_request()),
        "DRF APIView + HasQuota": lambda: quota_api(drf_request()),
        "django-ratelimit @ratelimit (locmem)": lambda: limited(django_request()),
        "seeds, ORM: read, compare, upsert": lambda: seeds_orm(django_request()),
        "seeds, raw SQL: read, compare, upsert": lambda: seeds_pattern(django_request()),
        "engine consume() alone (no view)": lambda: consume(tenant, "api_calls"),
        "raw conditional UPDATE alone": raw_update,
    }


def measure(scenarios: dict[str, Callable[[], Any]]) -> dict[str, float]:
    for run in scenarios.values():  # warm caches, connections, prepared plans
        for _ in range(50):
            run()
    means: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(ROUNDS):
        for name, run in scenarios.items():
            started = time.perf_counter()
            for _ in range(CALLS):
                run()
            means[name].append((time.perf_counter() - started) / CALLS * 1e6)
    return {name: min(values) for name, values in means.items()}


def report(vendor: str, version: str, results: dict[str, float]) -> str:
    base = results["plain view (baseline)"]
    floor = results["raw conditional UPDATE alone"]
    lines = [
        f"Enforcement overhead on {vendor} {version}: best of {ROUNDS} rounds x {CALLS} calls",
        "",
        f"| {'scenario':<38} | {'us/call':>8} | {'x plain':>7} | {'added us':>8} |",
        f"|{'-' * 40}|{'-' * 10}|{'-' * 9}|{'-' * 10}|",
    ]
    for name, value in results.items():
        added = "" if name.startswith(("raw", "engine")) else f"{value - base:8.1f}"
        lines.append(f"| {name:<38} | {value:8.1f} | {value / base:7.2f} | {added:>8} |")
    enforced = results["@require_quota (tenant known)"]
    seeds = results["seeds, ORM: read, compare, upsert"]
    seeds_raw = results["seeds, raw SQL: read, compare, upsert"]
    engine = results["engine consume() alone (no view)"]
    joint = results["plain view running the raw UPDATE"]
    minimum = results["hand-written minimum (see below)"]
    with_rules = results["hand-written, with plan and period"]
    budget = base + 1.2 * floor
    joint_budget = joint + 0.2 * floor
    lines += [
        "",
        f"goal 1: @require_quota <= plain + 1.2 x UPDATE: {enforced:.1f} <= {budget:.1f} us "
        f"-> {'met' if enforced <= budget else 'NOT met'}",
        f"        the same with plain + UPDATE measured together (the view running it): "
        f"{enforced:.1f} <= {joint:.1f} + 0.2 x {floor:.1f} = {joint_budget:.1f} us "
        f"-> {'met' if enforced <= joint_budget else 'NOT met'} (apart they add up to "
        f"{base + floor:.1f})",
        f"goal 2: @require_quota < seeds' check-then-increment (ORM): {enforced:.1f} < "
        f"{seeds:.1f} us -> {'met' if enforced < seeds else 'NOT met'}; "
        f"(raw SQL: {seeds_raw:.1f} us -> {'met' if enforced < seeds_raw else 'NOT met'})",
        f"where the time goes: engine consume() {engine:.1f} us (UPDATE {floor:.1f} us), "
        f"the decorator's own work about {enforced - base - engine:.1f} us",
        f"the hand-written minimum (the statement and the RateLimit fields, nothing else) costs "
        f"{minimum:.1f} us: {'within' if minimum <= budget else 'over'} the budget of goal 1 "
        f"apart ({budget:.1f}), leaving {joint_budget - minimum:.1f} us of the joint budget for "
        f"tenant, plan, period, thresholds and the decision",
        f"the same by hand on the engine's parts (the tenant's rules, the period, the decision "
        f"and its fields; no thresholds) costs {with_rules:.1f} us: "
        f"{'within' if with_rules <= joint_budget else 'over'} the joint budget "
        f"({joint_budget:.1f}) by {abs(joint_budget - with_rules):.1f} us",
    ]
    return "\n".join(lines)


def main() -> None:
    configure()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    from usage_limits.testing.factories import (
        MembershipFactory,
        TenantFactory,
        UserFactory,
        plan_with_limits,
    )

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        tenant = TenantFactory(plan=plan_with_limits("BENCH", api_calls=HUGE))
        user = UserFactory()
        MembershipFactory(user=user, tenant=tenant)
        results = measure(build_scenarios(tenant, user))
        version = (
            ".".join(str(part) for part in connection.mysql_version)
            if (connection.vendor == "mysql")
            else str(getattr(connection, "pg_version", "") or connection.Database.sqlite_version)
        )
        print(report(connection.vendor, version, results))
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
        teardown_test_environment()


if __name__ == "__main__":
    main()
