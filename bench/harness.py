"""Shared plumbing of the benchmarks: a fresh database, timing, and a ratio table.

Every figure is a median of several interleaved rounds (A B A B ...) so that drift on a busy
machine hits each candidate alike, and every table is printed as ratios against a baseline
measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")


def setup_database() -> str:
    """Create the benchmark database if needed, migrate it, return a label for the table."""
    import django
    from django.conf import settings

    db = settings.DATABASES["default"]
    vendor = db["ENGINE"].rsplit(".", 1)[-1]
    if vendor == "postgresql":
        import psycopg

        with psycopg.connect(
            host=db.get("HOST") or "127.0.0.1",
            port=db.get("PORT") or 5432,
            user=db.get("USER") or "postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    elif vendor == "mysql":
        import MySQLdb

        conn = MySQLdb.connect(
            host=db.get("HOST") or "127.0.0.1",
            port=int(db.get("PORT") or 3306),
            user=db.get("USER") or "root",
            passwd=db.get("PASSWORD") or "",
        )
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{db['NAME']}`")
        conn.close()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {"sqlite3": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}[vendor]


@dataclass
class Result:
    name: str
    per_call_us: float


def time_calls(func: Callable[[], object], calls: int) -> float:
    """Microseconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        func()
    return (time.perf_counter() - start) * 1e6 / calls


def compare(
    candidates: dict[str, Callable[[], object]], *, calls: int, rounds: int, warmup: int = 200
) -> dict[str, float]:
    for func in candidates.values():
        for _ in range(warmup):
            func()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, func in candidates.items():
            samples[name].append(time_calls(func, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(title: str, figures: dict[str, float], baseline: str, goal: str = "") -> None:
    base = figures[baseline]
    print(f"\n{title}")
    width = max(len(name) for name in figures) + 2
    print(f"{'':{width}}{'us/call':>10}  {'ratio':>7}")
    for name, value in figures.items():
        print(f"{name:{width}}{value:>10.1f}  {value / base:>6.2f}x")
    if goal:
        print(goal)
    sys.stdout.flush()
