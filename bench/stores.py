"""What one enforced request costs with each counter store, next to the peers, in one run.

    python bench/stores.py                 # about two minutes; needs PostgreSQL and Redis
    python bench/stores.py --seconds 1 --hot-seconds 3 --hot-threads 2

Each row calls a Django view function directly (a RequestFactory request, no middleware) so the
rows differ only by what the view does to enforce a quota; the ratio column divides by the plain
view measured in the same run.

The ``@require_quota`` rows find the request's tenant the way an API-key authentication layer
hands it over (``request.api_tenant``, set once, read by ``bench_tenant_resolver``), as
django-ratelimit's ``key="user"`` reads the user that authentication set. Before every call the
request forgets what enforcement noted on it (the resolved tenant, the decisions behind the
RateLimit headers), so each call resolves its tenant and builds its headers as a new request
would. One more row uses the default resolver (the signed-in user's membership: one query the first
time, then remembered by the process until a membership, tenant or plan changes).

The hot-counter rows drive one tenant's counter from 2 processes, each running ``--hot-threads``
threads (1 by default; web workers serve several threads each) that call ``consume`` back to
back; the figure is the sum of all calls divided by the wall-clock time. On PostgreSQL they run
three times: on Django's default connection settings, with prepared statements
(``server_side_binding`` and ``prepare_threshold``), and with prepared statements and
``synchronous_commit=off`` (docs/scaling.md, "Before switching").

Every measurement runs in a child process of its own database (SQLite, PostgreSQL; the Redis rows
keep their record in PostgreSQL), configured by ``bench/stores_settings.py``:

* ``BENCH_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432/usage_limits_bench``: the
  database is dropped and created again),
* ``REDIS_URL`` (default ``redis://127.0.0.1:6379/8``: only keys under ``uqbench:`` and
  ``bench:`` are written and removed).

Rows for the ``@require_quota`` decorator appear when ``usage_limits.decorators`` provides it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/usage_limits_bench"
)
REDIS_STORE = "usage_limits.backends.redis.RedisStore"
DATABASE_STORE = "usage_limits.backends.database.DatabaseStore"
GOAL_REDIS_HOT = 20_000
GOAL_POSTGRES_HOT = 3_000
WARMUP_CALLS = 200
BATCH = 50
ROUNDS = 3

View = Callable[[Any], Any]


@dataclass
class Context:
    """What the cases of one child process share: a user, a tenant and a request."""

    request: Any
    user: Any
    tenant_id: int
    database: str


# --- the cases ------------------------------------------------------------------------------------


def plain_view(ctx: Context) -> View:
    from django.http import HttpResponse

    def view(request: Any) -> Any:
        return HttpResponse("ok")

    return view


def engine_consume(ctx: Context) -> View:
    from django.http import HttpResponse

    from usage_limits import consume

    def view(request: Any) -> Any:
        decision = consume(ctx.tenant_id, "api_calls")
        return HttpResponse("ok", status=200 if decision.allowed else 429)

    return view


def bench_tenant_resolver(request: Any) -> Any:
    """The tenant an authentication layer put on the request, else the user's membership."""
    tenant = request.__dict__.get("api_tenant")
    if tenant is not None:
        return tenant
    # Imported here because this module loads before Django is set up; only this branch needs it.
    from usage_limits.tenancy import resolve_tenant_from_membership

    return resolve_tenant_from_membership(request)


def _require_quota_view(ctx: Context, *, membership: bool) -> View | None:
    try:
        from usage_limits.decorators import require_quota
    except ImportError:
        return None
    from django.http import HttpResponse
    from django.test import RequestFactory

    from usage_limits.models import Tenant
    from usage_limits.testing.factories import MembershipFactory, UserFactory

    @require_quota("api_calls")
    def enforced(request: Any) -> Any:
        return HttpResponse("ok")

    own = RequestFactory().get("/api/things/")
    if membership:
        own.user = UserFactory()
        MembershipFactory(user=own.user, tenant_id=ctx.tenant_id)
    else:
        own.user = ctx.user
        own.api_tenant = Tenant.objects.get(pk=ctx.tenant_id)
    fresh = dict(own.__dict__)

    def view(request: Any) -> Any:
        # Each call is a new request: what enforcement noted on the last one (the resolved
        # tenant, the decisions for the RateLimit headers) is forgotten.
        own.__dict__.clear()
        own.__dict__.update(fresh)
        response = enforced(own)
        if response.status_code != 200:
            raise RuntimeError(f"@require_quota answered {response.status_code}")
        return response

    return view


def require_quota_view(ctx: Context) -> View | None:
    return _require_quota_view(ctx, membership=False)


def require_quota_membership_view(ctx: Context) -> View | None:
    return _require_quota_view(ctx, membership=True)


def django_ratelimit_view(ctx: Context) -> View:
    from django.http import HttpResponse
    from django_ratelimit.decorators import ratelimit

    @ratelimit(key="user", rate="1000000000/h", block=False)  # type: ignore[untyped-decorator]
    def view(request: Any) -> Any:
        return HttpResponse("ok", status=429 if request.limited else 200)

    return view  # type: ignore[no-any-return]


def drf_user_rate_throttle(ctx: Context) -> View:
    from django.core.cache import caches
    from django.http import HttpResponse
    from rest_framework.request import Request
    from rest_framework.throttling import UserRateThrottle

    class Throttle(UserRateThrottle):
        cache = caches["redis"]
        rate = "1000/min"

    # DRF keeps a list of request times per user and rewrites it on every admitted request, so
    # its cost grows with each user's recent requests, and a denial (a read only) is cheaper.
    # Requests cycle through 1,000 users so that every measured request is admitted with a
    # short history, as on a site with many moderately active users.
    users = [SimpleNamespace(pk=10**6 + i, is_authenticated=True) for i in range(1000)]
    requests = []
    for user in users:
        drf_request = Request(ctx.request)
        drf_request.user = user
        requests.append(drf_request)
    turn = itertools.cycle(requests)
    throttle = Throttle()

    def view(request: Any) -> Any:
        allowed = throttle.allow_request(next(turn), None)
        return HttpResponse("ok", status=200 if allowed else 429)

    return view


def seeds_check_then_increment(ctx: Context) -> View:
    """The seeds' pattern: read the counter, compare, then increment (over-admits under load)."""
    from django.db.models import F
    from django.http import HttpResponse
    from django.utils import timezone

    from usage_limits.models import UsageRecord
    from usage_limits.periods import period_containing

    limit = 10**12
    period = period_containing("monthly", timezone.now())
    now = timezone.now()
    UsageRecord.objects.get_or_create(
        tenant_id=ctx.tenant_id,
        feature="seeds_counter",
        period_start=period.start,
        defaults={
            "period_key": period.key,
            "period_end": period.end,
            "created_at": now,
            "updated_at": now,
        },
    )
    rows = UsageRecord.objects.filter(
        tenant_id=ctx.tenant_id, feature="seeds_counter", period_start=period.start
    )

    def view(request: Any) -> Any:
        used = rows.values_list("used", flat=True).first() or 0
        if used + 1 > limit:
            return HttpResponse("limit reached", status=429)
        rows.update(used=F("used") + 1)
        return HttpResponse("ok")

    return view


def seeds_sum_over_events(events: int) -> Callable[[Context], View]:
    """The seeds' metering check: sum the period's events on every request, then add one."""

    def build(ctx: Context) -> View:
        from django.db.models import Sum
        from django.http import HttpResponse
        from django.utils import timezone

        from usage_limits.models import UsageEvent
        from usage_limits.periods import period_containing
        from usage_limits.testing.factories import TenantFactory

        tenant = TenantFactory(plan_id=_bench_plan_id())
        period = period_containing("monthly", timezone.now())
        assert period.end is not None
        span = (min(timezone.now(), period.end) - period.start) / max(events, 1)
        for first in range(0, events, 10_000):
            UsageEvent.objects.bulk_create(
                UsageEvent(
                    tenant=tenant,
                    feature="api_calls",
                    quantity=1,
                    timestamp=period.start + span * i,
                    period_key=period.key,
                )
                for i in range(first, min(first + 10_000, events))
            )
        limit = 10**12
        in_period = UsageEvent.objects.filter(
            tenant=tenant,
            feature="api_calls",
            timestamp__gte=period.start,
            timestamp__lt=period.end,
        )

        def view(request: Any) -> Any:
            total = in_period.aggregate(total=Sum("quantity"))["total"] or 0
            if total + 1 > limit:
                return HttpResponse("limit reached", status=429)
            UsageEvent.objects.create(
                tenant=tenant,
                feature="api_calls",
                quantity=1,
                timestamp=timezone.now(),
                period_key=period.key,
            )
            return HttpResponse("ok")

        return view

    return build


def _bench_plan_id() -> int:
    from usage_limits.models import Plan

    return Plan.objects.get(code="BENCH").pk


# (label, builder) per child process; the first row of the first child is the baseline.
CASES: dict[str, list[tuple[str, Callable[[Context], View | None]]]] = {
    "sqlite": [
        ("plain view (baseline)", plain_view),
        ("consume(), database store, SQLite", engine_consume),
        ("@require_quota, database store, SQLite", require_quota_view),
    ],
    "postgresql": [
        ("consume(), database store, PostgreSQL", engine_consume),
        ("@require_quota, database store, PostgreSQL", require_quota_view),
        ("seeds: check, then increment (PostgreSQL)", seeds_check_then_increment),
        ("seeds: sum over 10,000 events (PostgreSQL)", seeds_sum_over_events(10_000)),
        ("seeds: sum over 100,000 events (PostgreSQL)", seeds_sum_over_events(100_000)),
    ],
    "redis": [
        ("consume(), Redis store", engine_consume),
        ("@require_quota, Redis store", require_quota_view),
        (
            "@require_quota, Redis store, tenant from the user's membership",
            require_quota_membership_view,
        ),
        ("django-ratelimit @ratelimit + django-redis", django_ratelimit_view),
        ("DRF UserRateThrottle + django-redis", drf_user_rate_throttle),
    ],
}
# The hot counter through the engine (what a request pays: rules, period, signals) and at the
# store itself (what the counter sustains).
# The "bare driver" rows are the floor of one statement per count: the store's own statement (the
# guarded UPDATE with today's history bucket folded in) sent by psycopg alone, without Django or
# this package, on the same connection settings.
# Each group runs on its own connection settings (see HOT_OPTIONS).
HOT = {
    "postgresql": [
        ("PostgreSQL: bare driver, the store's statement (the floor)", "driver"),
        ("PostgreSQL: store.consume()", "store"),
        ("PostgreSQL: engine consume()", "engine"),
        # Django's default on psycopg 3: parameters bound on the client, no prepared statements
        # (so that transaction-pooling proxies work). Opting in lets the server parse and plan
        # the counter's statement once per connection instead of once per request.
        ("PostgreSQL, prepared statements: bare driver (the floor)", "driver"),
        ("PostgreSQL, prepared statements: store.consume()", "store"),
        ("PostgreSQL, prepared statements: engine consume()", "engine"),
        # A connection of its own for the counters may commit without waiting for the disk: a
        # server crash can then forget the last fraction of a second of counts, never corrupt.
        ("PostgreSQL, no synchronous commit: bare driver (the floor)", "driver"),
        ("PostgreSQL, no synchronous commit: store.consume()", "store"),
        ("PostgreSQL, no synchronous commit: engine consume()", "engine"),
    ],
    "redis": [
        ("Redis: bare socket, the store's script (the floor)", "socket"),
        ("Redis: store.consume()", "store"),
        ("Redis: engine consume()", "engine"),
    ],
}
# The connection OPTIONS of each hot-counter group, by a phrase of its labels.
HOT_OPTIONS = {
    "prepared statements": {"server_side_binding": True, "prepare_threshold": 0},
    "no synchronous commit": {
        "server_side_binding": True,
        "prepare_threshold": 0,
        "options": "-c synchronous_commit=off",
    },
}


# --- measuring ------------------------------------------------------------------------------------


def measure(view: View, request: Any, seconds: float) -> dict[str, float]:
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(BATCH):
            view(request)
        calls += BATCH
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - started
    return {"us_per_call": elapsed / calls * 1e6, "per_second": calls / elapsed}


def _hot_worker(
    tenant_id: int, seconds: float, level: str, threads: int, start: Any, results: Any
) -> None:
    import threading

    from django.db import connections
    from django.utils import timezone

    from usage_limits import consume
    from usage_limits.backends import CounterKey, get_store
    from usage_limits.backends.base import usage_day
    from usage_limits.backends.database import _statements
    from usage_limits.periods import period_containing

    connections.close_all()  # never share the parent's connection
    consume(tenant_id, "api_calls")
    store = get_store()
    key = CounterKey(tenant_id, "api_calls", period_containing("monthly", timezone.now()))
    limit = 10**12

    def engine_call() -> None:
        consume(tenant_id, "api_calls")

    def store_call() -> None:
        store.consume(key, 1, limit)

    # What DatabaseStore.consume() sends for this call, built once: its statement and parameters.
    statement = _statements(connections["default"]).guarded_add_with_history
    day = usage_day(timezone.now())

    def driver_call() -> None:
        connection = connections["default"]
        connection.ensure_connection()
        cursor = connection.__dict__.setdefault(
            "_bench_driver_cursor", connection.connection.cursor()
        )
        now = timezone.now()
        cursor.execute(
            statement,
            [1, now, tenant_id, "api_calls", key.period.start, limit - 1, day, 1],
        )
        cursor.fetchone()

    calls = {"engine": engine_call, "store": store_call, "driver": driver_call}
    call = _bare_socket_call(store, key, limit) if level == "socket" else calls[level]
    counts: list[int] = []
    ready = threading.Barrier(threads + 1)

    def loop() -> None:
        call()  # this thread's own connections
        ready.wait()
        calls = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(BATCH):
                call()
            calls += BATCH
        counts.append(calls)
        connections.close_all()

    runners = [threading.Thread(target=loop) for _ in range(threads)]
    for runner in runners:
        runner.start()
    start.wait()
    ready.wait()
    for runner in runners:
        runner.join()
    results.put(sum(counts))


def _bare_socket_call(store: Any, key: Any, limit: int) -> Callable[[], None]:
    """The Redis floor: the very command ``store.consume()`` sends (captured from one call),
    packed once and written to a plain socket per thread, its reply parsed by hiredis (the least
    a Python client does for it; the store itself goes through redis-py's ``Script``)."""
    import socket
    import threading
    from urllib.parse import urlsplit

    import hiredis

    from bench.stores_settings import REDIS_URL

    sent: list[tuple[Any, ...]] = []
    script = store._script("change")

    def capture(keys: list[Any], args: list[Any]) -> Any:
        sent.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        return script(keys=keys, args=args)

    store._scripts["change"] = capture
    try:
        store.consume(key, 1, limit)
    finally:
        store._scripts["change"] = script
    if not sent:
        raise RuntimeError("store.consume() sent no script to capture")
    command = hiredis.pack_command(sent[-1])
    address = urlsplit(REDIS_URL)
    database = (address.path or "/0").strip("/") or "0"
    local = threading.local()

    def call() -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            sock = socket.create_connection((address.hostname, address.port or 6379))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(hiredis.pack_command(("SELECT", database)))
            sock.recv(64)
            connection = local.connection = (sock, hiredis.Reader())
        sock, reader = connection
        sock.sendall(command)
        reply = False
        while reply is False:
            reader.feed(sock.recv(65536))
            reply = reader.gets()

    return call


def hot_counter(
    tenant_id: int, seconds: float, level: str, processes: int = 2, threads: int = 1
) -> dict[str, float]:
    """consume() calls a second on one tenant's counter, summed over ``processes`` processes of
    ``threads`` threads each."""
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(
            target=_hot_worker, args=(tenant_id, seconds, level, threads, start, results)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    return {"per_second": total / elapsed, "us_per_call": elapsed / total * 1e6}


# --- one child process per database ---------------------------------------------------------------


def _prepare_postgres() -> None:
    import psycopg

    from bench.stores_settings import env

    config = env.db_url_config(POSTGRES_URL)
    name = config["NAME"]
    with psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"],
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def child(target: str, seconds: float, hot_seconds: float, hot_threads: int) -> None:
    if target == "sqlite":
        os.environ.pop("BENCH_DATABASE_URL", None)
    else:
        os.environ["BENCH_DATABASE_URL"] = POSTGRES_URL
        _prepare_postgres()
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.stores_settings"
    import django

    django.setup()
    from django.conf import settings

    if target == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(settings.DATABASES["default"]["NAME"]) + suffix).unlink(missing_ok=True)
    if target == "redis":
        settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "STORE": REDIS_STORE}
        _clear_redis()
    from django.core.management import call_command
    from django.test import RequestFactory

    from usage_limits.plans import sync_plans
    from usage_limits.testing.factories import TenantFactory, UserFactory

    call_command("migrate", verbosity=0)
    sync_plans()
    user = UserFactory()
    tenant = TenantFactory(plan_id=_bench_plan_id())
    request = RequestFactory().get("/api/things/")
    request.user = user
    ctx = Context(request=request, user=user, tenant_id=tenant.pk, database=target)
    views: list[tuple[str, View]] = []
    for label, build in CASES[target]:
        view = build(ctx)
        if view is not None:
            for _ in range(WARMUP_CALLS):
                view(request)
            views.append((label, view))
    # Rounds interleave the cases and each keeps its fastest round: on a shared machine, other
    # load only ever slows a round down, and it hits every case alike.
    best: dict[str, dict[str, float]] = {}
    for _round in range(ROUNDS):
        for label, view in views:
            result = measure(view, request, seconds / ROUNDS)
            if label not in best or result["us_per_call"] < best[label]["us_per_call"]:
                best[label] = result
    for label, _build in CASES[target]:
        _emit({"label": label, **best.get(label, {"missing": True})})
    from django.db import connection

    plain_options = dict(connection.settings_dict.get("OPTIONS", {}))
    for label, level in HOT.get(target, []):
        options = next((extra for phrase, extra in HOT_OPTIONS.items() if phrase in label), {})
        connection.close()
        connection.settings_dict["OPTIONS"] = {**plain_options, **options}
        hot_tenant = TenantFactory(plan_id=_bench_plan_id())
        figures = hot_counter(hot_tenant.pk, hot_seconds, level, threads=hot_threads)
        _emit({"label": label, "hot": True, "threads": hot_threads, **figures})
    if target == "redis":
        _clear_redis()


def _clear_redis() -> None:
    import redis

    from bench.stores_settings import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    for pattern in ("uqbench:*", "bench:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def _emit(row: dict[str, Any]) -> None:
    print("ROW " + json.dumps(row), flush=True)


# --- the parent: run the children, print the table ------------------------------------------------


def run_child(target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        target,
        "--seconds",
        str(args.seconds),
        "--hot-seconds",
        str(args.hot_seconds),
        "--hot-threads",
        str(args.hot_threads),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"the {target} benchmarks failed")
    return [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("ROW ")]


def table(rows: list[dict[str, Any]]) -> str:
    baseline = next(r for r in rows if "baseline" in r["label"])["us_per_call"]
    lines = [
        "| case | µs per request | requests/s | x plain view |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("missing"):
            lines.append(f"| {row['label']} | (not available in this build) | | |")
        elif not row.get("hot"):
            lines.append(
                f"| {row['label']} | {row['us_per_call']:,.1f} | {row['per_second']:,.0f} | "
                f"{row['us_per_call'] / baseline:,.1f} |"
            )
    hot = [row for row in rows if row.get("hot")]
    if hot:
        threads = hot[0]["threads"]
        lines += [
            "",
            f"| hot counter, one tenant, 2 processes x {threads} thread{'s' * (threads > 1)} "
            "| consumes/s | goal | met |",
            "|---|---:|---:|:-:|",
        ]
    for row in hot:
        goal = GOAL_REDIS_HOT if "Redis" in row["label"] else GOAL_POSTGRES_HOT
        met = "yes" if row["per_second"] >= goal else "no"
        lines.append(f"| {row['label']} | {row['per_second']:,.0f} | {goal:,} | {met} |")
    by_label = {row["label"]: row for row in rows}
    theirs = by_label.get("django-ratelimit @ratelimit + django-redis")
    for label in ("@require_quota, Redis store", "consume(), Redis store"):
        ours = by_label.get(label)
        if ours and theirs and not ours.get("missing"):
            ratio = ours["us_per_call"] / theirs["us_per_call"]
            lines += [
                "",
                f"{label} vs django-ratelimit + django-redis: {ratio:.2f}x the cost per request "
                f"(goal: at most 1.00x; {'met' if ratio <= 1 else 'not met'}).",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per row (default 2)")
    parser.add_argument("--hot-seconds", type=float, default=5.0, help="per hot counter (5)")
    parser.add_argument(
        "--hot-threads", type=int, default=1, help="threads per hot-counter process (1)"
    )
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="repeatable")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        child(args.child, args.seconds, args.hot_seconds, args.hot_threads)
        return
    rows: list[dict[str, Any]] = []
    for target in args.only or ["sqlite", "postgresql", "redis"]:
        rows += run_child(target, args)
    if not any("baseline" in row["label"] for row in rows):
        baseline = [row for row in run_child("sqlite", args) if "baseline" in row["label"]]
        rows = baseline + rows
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load} (after), "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
