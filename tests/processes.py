"""Work for child processes (multiprocessing, spawn): each sets Django up on the test database.

Nothing here imports Django models at module level: a spawned child imports this module before
``django.setup()`` has run.
"""

from __future__ import annotations

import os
from typing import Any


def setup_child(database_name: str, usage_limits: dict[str, Any]) -> None:
    """Configure Django in a fresh interpreter to use the parent's test database and settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django
    from django.conf import settings

    from tests.clock import move_clock

    move_clock()  # the parent's moved clock, if it runs on one
    django.setup()
    # Before the first query: the connection reads this dict when it first connects.
    settings.DATABASES["default"]["NAME"] = database_name
    settings.USAGE_LIMITS = usage_limits


def consume_many(
    database_name: str,
    usage_limits: dict[str, Any],
    tenant_id: int,
    count: int,
    start: Any,
    results: Any,
) -> None:
    """Consume ``count`` times, one unit each; put how many were admitted on ``results``."""
    setup_child(database_name, usage_limits)
    from usage_limits import consume

    start.wait()
    results.put(("admitted", sum(consume(tenant_id, "api_calls").allowed for _ in range(count))))


def flush_until(
    database_name: str, usage_limits: dict[str, Any], start: Any, stop: Any, results: Any
) -> None:
    """Flush in a loop while the others count; put how many flushes ran on ``results``."""
    setup_child(database_name, usage_limits)
    from usage_limits.backends.redis_flush import flush_counters

    start.wait()
    runs = 0
    while not stop.is_set():
        flush_counters()
        runs += 1
    results.put(("flushes", runs))


def consume_before_and_after_a_change(
    database_name: str,
    usage_limits: dict[str, Any],
    caches: dict[str, Any],
    tenant_id: int,
    warmed: Any,
    changed: Any,
    results: Any,
) -> None:
    """Count once (this process now remembers the tenant's rules), wait while another process
    changes them, count again; put the second decision's (allowed, limit) on ``results``."""
    from django.conf import settings

    settings.CACHES = caches  # before setup: the cache of a process of its own
    setup_child(database_name, usage_limits)
    from usage_limits import consume

    consume(tenant_id, "api_calls")
    warmed.set()
    changed.wait(60)
    decision = consume(tenant_id, "api_calls")
    results.put((decision.allowed, decision.limit, decision.reason))
