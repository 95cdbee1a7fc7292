"""Usage events per second through ``POST /api/usage/events/``, with idempotency keys.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x python bench/ingest.py   # PostgreSQL
    python bench/ingest.py                                                      # SQLite

Requests go through Django's full request handling in this process (WSGI handler, middleware,
token authentication, DRF parsing and validation, the engine's batch path, the JSON response),
with no network in between: the figure is the server's cost, on one core. Every event carries a
fresh idempotency key, so each one is a ledger row; the "replayed" rows send batches already
seen, which must count nothing. The database is a dedicated one (``bench_usage_limits_ingest``
on servers, a file in /tmp for SQLite), created anew for each run. Goal: >= 5,000 events/s on
PostgreSQL in
batches of 100 and of 1,000.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django
import environ
from django.conf import settings
from django.urls import include, path

DB_NAME = "bench_usage_limits_ingest"
EVENTS_PER_ROUND = 6_000
ROUNDS = 5

urlpatterns: list[Any] = []  # filled once settings exist (this module is the ROOT_URLCONF)


def configure() -> str:
    url = os.environ.get("DATABASE_URL") or (
        f"sqlite:///{Path(tempfile.gettempdir()) / (DB_NAME + '.sqlite3')}"
    )
    database = environ.Env().db_url_config(url)
    if database["ENGINE"].endswith("sqlite3"):
        database["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
            "timeout": 20,
        }
    else:
        database["NAME"] = DB_NAME
    settings.configure(
        SECRET_KEY="bench-only",  # noqa: S106 - never served
        DEBUG=False,
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="__main__",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DATABASES={"default": database},
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "rest_framework",
            "rest_framework.authtoken",
            "usage_limits",
        ],
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
        },
        USAGE_LIMITS={"FEATURES": {"api_calls": {"kind": "metered", "period": "monthly"}}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    create_database(database)
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    vendor = database["ENGINE"].rsplit(".", 1)[-1]
    return {"sqlite3": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}[vendor]


def create_database(database: dict[str, Any]) -> None:
    """A new, empty benchmark database each run (never the test or example databases)."""
    if database["ENGINE"].endswith("sqlite3"):
        Path(database["NAME"]).unlink(missing_ok=True)
    if database["ENGINE"].endswith("postgresql"):
        import psycopg

        with psycopg.connect(
            host=database.get("HOST") or "127.0.0.1",
            port=database.get("PORT") or 5432,
            user=database.get("USER") or "postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    elif database["ENGINE"].endswith("mysql"):
        import MySQLdb

        conn = MySQLdb.connect(
            host=database.get("HOST") or "127.0.0.1",
            port=int(database.get("PORT") or 3306),
            user=database.get("USER") or "root",
            passwd=database.get("PASSWORD") or "",
        )
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{DB_NAME}`")
        conn.cursor().execute(f"CREATE DATABASE `{DB_NAME}`")
        conn.close()


def fresh_tenant() -> tuple[Any, str]:
    from rest_framework.authtoken.models import Token

    from usage_limits.models import Tenant, UsageEvent, UsageRecord
    from usage_limits.testing.factories import MembershipFactory, TenantFactory, plan_with_limits

    UsageEvent.objects.all().delete()
    UsageRecord.objects.all().delete()
    Tenant.objects.all().delete()
    tenant = TenantFactory(plan=plan_with_limits("BENCH", api_calls=10**15))
    membership = MembershipFactory(tenant=tenant)
    token, _ = Token.objects.get_or_create(user=membership.user)
    return tenant, token.key


def bodies(batch: int, total: int, prefix: str, *, enforce: bool) -> list[str]:
    events = [
        {
            "feature": "api_calls",
            "quantity": 1,
            "idempotency_key": f"{prefix}-{n}",
            **({"enforce": True} if enforce else {}),
        }
        for n in range(total)
    ]
    if batch == 1:
        return [json.dumps(e) for e in events]
    return [json.dumps(events[i : i + batch]) for i in range(0, total, batch)]


def run(client: Any, token: str, payloads: list[str]) -> tuple[float, list[float], float]:
    """Wall seconds, per-request latencies, and this process's CPU seconds for ``payloads``."""
    latencies = []
    cpu = time.process_time()
    start = time.perf_counter()
    for payload in payloads:
        sent = time.perf_counter()
        response = client.post(
            "/api/usage/events/",
            payload,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        latencies.append(time.perf_counter() - sent)
        if response.status_code not in (200, 201):
            raise SystemExit(f"unexpected {response.status_code}: {response.content[:300]!r}")
    return time.perf_counter() - start, latencies, time.process_time() - cpu


def main() -> None:
    label = configure()
    urlpatterns.append(path("api/", include("usage_limits.api.urls")))
    from django.test import Client

    from usage_limits import get_usage

    tenant, token = fresh_tenant()
    client = Client()
    cases = [
        ("1 event a request", 1, False, 1_000),
        ("batches of 100", 100, False, EVENTS_PER_ROUND),
        ("batches of 1,000", 1000, False, EVENTS_PER_ROUND),
        ("batches of 100, enforce", 100, True, EVENTS_PER_ROUND),
        ("batches of 1,000, enforce", 1000, True, EVENTS_PER_ROUND),
    ]
    run(client, token, bodies(100, 2_000, "warmup", enforce=False))  # caches, connections
    expected = 2_000
    rates: dict[str, list[float]] = {name: [] for name, *_ in cases}
    latency: dict[str, list[float]] = {name: [] for name, *_ in cases}
    replays: dict[str, list[float]] = {name: [] for name, *_ in cases}
    cpu_rates: dict[str, list[float]] = {name: [] for name, *_ in cases}
    # Rounds interleave the cases (A B C D E A B C D E ...), so that the load of a shared machine
    # drifting during the run hits every case alike; each figure is the median of its rounds.
    for round_ in range(ROUNDS):
        for name, batch, enforce, total in cases:
            payloads = bodies(batch, total, f"{name}-{round_}", enforce=enforce)
            seconds, latencies, cpu = run(client, token, payloads)
            rates[name].append(total / seconds)
            cpu_rates[name].append(total / cpu)
            latency[name].append(statistics.median(latencies) * 1000)
            expected += total
            seconds, _, _ = run(client, token, payloads)  # the same batches again: all replays
            replays[name].append(total / seconds)
    rows = [
        (
            name,
            statistics.median(rates[name]),
            statistics.median(latency[name]),
            statistics.median(replays[name]),
            statistics.median(cpu_rates[name]),
        )
        for name, *_ in cases
    ]
    counted = get_usage(tenant).feature("api_calls").used
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nPOST /api/usage/events/ on {label} ({ROUNDS} interleaved rounds, median; "
        "new keys each round)"
    )
    print(f"machine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min) at the end")
    print(f"{'case':<28}{'events/s':>10}{'ms/request':>12}{'replays/s':>11}{'events/CPU-s':>14}")
    for name, rate, median, replay, per_cpu in rows:
        print(f"{name:<28}{rate:>10,.0f}{median:>12.2f}{replay:>11,.0f}{per_cpu:>14,.0f}")
    print(
        "events/CPU-s: events per second of this process's CPU time (Django, DRF, the engine, "
        "the client), which a busy machine's scheduling does not distort; the database's own "
        "time is not in it."
    )
    print(f"\ncounter {counted:,} = events sent once {expected:,}: {counted == expected}")
    goal = min(row[1] for row in rows if row[0] in ("batches of 100", "batches of 1,000"))
    print(
        f"goal >= 5,000 events/s in batches of 100 and 1,000: {'met' if goal >= 5000 else 'MISSED'}"
    )
    if counted != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
