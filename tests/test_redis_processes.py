"""Several processes against one Redis counter, with a flush running beside them."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from tests.conftest import require_module

require_module("redis", 'pip install -e ".[redis]"')

from django.conf import settings as django_settings  # noqa: E402
from django.db import connection  # noqa: E402

from usage_limits import get_usage  # noqa: E402
from usage_limits.backends.redis_flush import flush_counters  # noqa: E402
from usage_limits.models import UsageRecord  # noqa: E402
from usage_limits.testing.factories import TenantFactory, plan_with_limits  # noqa: E402

from . import processes  # noqa: E402
from .redis_service import redis_prefix  # noqa: E402, F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_prefix")]

PROCESSES = 4
CONSUMES = 500
LIMIT = 1000


def test_four_processes_admit_exactly_the_limit_and_the_flush_agrees_with_redis() -> None:
    tenant = TenantFactory(plan=plan_with_limits("THOUSAND", api_calls=LIMIT))
    database_name = connection.settings_dict["NAME"]
    usage_limits: dict[str, Any] = dict(django_settings.USAGE_LIMITS)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES + 1)
    stop = context.Event()
    results = context.Queue()
    children = [
        context.Process(
            target=processes.consume_many,
            args=(database_name, usage_limits, tenant.pk, CONSUMES, start, results),
        )
        for _ in range(PROCESSES)
    ]
    flusher = context.Process(
        target=processes.flush_until, args=(database_name, usage_limits, start, stop, results)
    )
    for child in [*children, flusher]:
        child.start()
    try:
        counted = [results.get(timeout=240) for _ in children]
        stop.set()
        flushed = results.get(timeout=60)
    finally:
        stop.set()
        for child in [*children, flusher]:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert {what for what, _ in counted} == {"admitted"}
    admitted = sum(n for _, n in counted)
    flushes = flushed[1]
    assert admitted == LIMIT
    assert flushes >= 1
    flush_counters()
    in_redis = get_usage(tenant).feature("api_calls").used
    assert in_redis == LIMIT
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == in_redis
