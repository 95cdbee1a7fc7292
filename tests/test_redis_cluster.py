"""The Redis store on Redis Cluster (a one-node cluster of the test's own serving every slot).

Cluster refuses a script or MGET whose keys span slots, and refuses EVALSHA and MGET in
pipelines: these tests fail if a key lacks the tenant's hash tag or a batch is pipelined there.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import require_module

require_module("redis", 'pip install -e ".[redis]"')

from usage_limits import consume, get_usage, refund, reset_usage, set_usage  # noqa: E402
from usage_limits.backends import get_store  # noqa: E402
from usage_limits.backends.redis_flush import flush_counters  # noqa: E402
from usage_limits.models import UsageRecord  # noqa: E402
from usage_limits.testing.factories import TenantFactory, plan_with_limits  # noqa: E402

from .redis_service import PrivateRedis, private_cluster, redis_settings  # noqa: E402, F401

pytestmark = pytest.mark.django_db


def test_counting_flushing_and_resetting_on_a_cluster(
    settings: Any,
    private_cluster: PrivateRedis,  # noqa: F811
) -> None:
    settings.USAGE_LIMITS = redis_settings(private_cluster.url, "uq", REDIS_CLUSTER=True)
    assert type(get_store().client).__name__ == "RedisCluster"
    plan = plan_with_limits("FIVE", api_calls=5, seats=3)
    tenants = [TenantFactory(plan=plan) for _ in range(3)]
    for tenant in tenants:
        assert [consume(tenant, "api_calls").allowed for _ in range(6)] == [True] * 5 + [False]
        refund(tenant, "api_calls", 2)
        set_usage(tenant, "seats", 2)
    usage = get_usage(tenants[0])
    assert (usage.feature("api_calls").used, usage.feature("seats").used) == (3, 2)

    report = flush_counters()
    assert (report.counters, report.written) == (6, 3)  # seats were written by set_usage
    assert sorted(
        UsageRecord.objects.filter(feature="api_calls").values_list("used", flat=True)
    ) == [3, 3, 3]
    reset_usage(tenants[1], "api_calls", reason="cluster")
    assert get_usage(tenants[1]).feature("api_calls").used == 0
    assert flush_counters().counters == 1  # the reset marked its counter; the rest are clean
