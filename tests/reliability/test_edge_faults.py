"""Store faults seen from the edges: never a 500 page, never a traceback, nothing lost or doubled.

Every edge that counts is called over HTTP (Django's test client, ``DEBUG = False``): a view
decorated with ``@require_quota``, a path counted by ``UsageLimitsMiddleware``'s ``PATH_RULES``,
a DRF view with the ``HasQuota`` permission and the REST API's ``POST /api/usage/events/``.

* **A database connection killed mid-request** (PostgreSQL ``pg_terminate_backend``, MariaDB
  ``KILL CONNECTION``): a middleware of the test kills the request's own session after
  authentication, before the edge finds the tenant and counts. The request gets a 503 with the
  app's clear body (JSON, or the HTML refusal page for a browser), the next request reconnects
  and counts, and the counter holds exactly the admitted requests.
* **Redis stopped** (a private ``redis-server``, killed and started again), in both fail modes:
  ``open`` keeps answering 200 and counts in the database, ``closed`` answers 503; after Redis
  is back and the flush ran, Redis and the database hold exactly the admitted requests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import require_module

require_module("redis", 'pip install -e ".[redis]"')

from django.conf import settings  # noqa: E402
from django.db import close_old_connections, connection  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from tests.redis_service import PrivateRedis, private_redis, redis_settings  # noqa: E402, F401
from usage_limits.backends import CounterKey  # noqa: E402
from usage_limits.backends.redis_flush import flush_counters  # noqa: E402
from usage_limits.models import Tenant, UsageRecord  # noqa: E402
from usage_limits.periods import current_period  # noqa: E402
from usage_limits.testing.factories import (  # noqa: E402
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

from . import edges  # noqa: E402
from .faults import KILLABLE_VENDORS, ConnectionKiller, session_id  # noqa: E402
from .figures import Figures, discrepancy  # noqa: E402
from .stores import describe_database  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

KILL_HEADER = "X-Reliability-Kill"
JSON = "application/json"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

# Edge -> (method, path, JSON body).
EDGES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "decorator": ("get", "/decorated/", None),
    "middleware": ("get", edges.MIDDLEWARE_PATH, None),
    "drf": ("get", "/drf/", None),
    "api": ("post", "/api/usage/events/", {"feature": "api_calls", "quantity": 1, "enforce": True}),
}

_killer: list[ConnectionKiller] = []


class KillConnectionMiddleware:
    """Kills the request's own database session when the test asks (after authentication)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.headers.get(KILL_HEADER) and _killer:
            _ = request.user.pk  # the session and the user are read: the connection is open
            _killer[0].kill(session_id(connection))
        return self.get_response(request)


@pytest.fixture
def site() -> Iterator[None]:
    middleware = list(settings.MIDDLEWARE)
    after_auth = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
    middleware[after_auth:after_auth] = [
        f"{__name__}.KillConnectionMiddleware",
        "usage_limits.middleware.UsageLimitsMiddleware",
    ]
    with override_settings(
        ROOT_URLCONF="tests.reliability.edges",
        MIDDLEWARE=middleware,
        DEBUG=False,
        USAGE_LIMITS={**settings.USAGE_LIMITS, "PATH_RULES": edges.PATH_RULES},
    ):
        yield


def member_client(tenant: Tenant) -> Client:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant, is_default=True)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


class Tally:
    """What the requests of one test were answered, checked as they arrive."""

    def __init__(self) -> None:
        self.admitted = 0
        self.statuses: dict[int, int] = {}

    def send(self, client: Client, edge: str, *, accept: str = JSON, kill: bool = False) -> int:
        # What Django's handler does around every request (the test client leaves it out):
        # drop a connection that failed, so the request after a fault opens a new one.
        close_old_connections()
        method, path, body = EDGES[edge]
        headers = {"Accept": accept, **({KILL_HEADER: "1"} if kill else {})}
        if body is not None:
            payload = json.dumps({**body, "idempotency_key": f"k{time.perf_counter_ns()}"})
            response = client.post(path, payload, content_type=JSON, headers=headers)
        else:
            response = getattr(client, method)(path, headers=headers)
        text = response.content.decode()
        status = response.status_code
        assert status != 500, f"{edge}: 500 {text[:300]}"
        assert "Traceback (most recent call last)" not in text, f"{edge}: a traceback in the body"
        if status == 503:
            if accept == JSON:
                assert json.loads(text)["code"] == "store_unavailable", text
            else:
                assert "<html" in text.lower(), text[:300]
                assert "Server Error" not in text, text[:300]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.admitted += status in (200, 201)
        return status


def counter(tenant: Tenant) -> CounterKey:
    return CounterKey(tenant.pk, "api_calls", current_period("monthly"))


def database_row(tenant: Tenant) -> int:
    row = UsageRecord.objects.filter(tenant=tenant, feature="api_calls").first()
    return 0 if row is None else row.used


# --- a database connection killed mid-request ---------------------------------------------------


@pytest.fixture
def killer() -> Iterator[ConnectionKiller]:
    if connection.vendor not in KILLABLE_VENDORS:
        pytest.skip(f"{connection.vendor} has no server connection to kill")
    made = ConnectionKiller()
    _killer.append(made)
    yield made
    _killer.clear()
    made.close()
    connection.close_if_unusable_or_obsolete()


@pytest.mark.usefixtures("site")
@pytest.mark.parametrize("edge", list(EDGES))
def test_a_connection_killed_mid_request_is_a_503_and_loses_nothing(
    edge: str, killer: ConnectionKiller, figures: Figures
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("EDGE", api_calls=100))
    client = member_client(tenant)
    tally = Tally()
    for round_ in range(3):
        assert tally.send(client, edge) in (200, 201)
        accept = BROWSER if round_ == 1 and edge != "api" else JSON
        assert tally.send(client, edge, kill=True, accept=accept) == 503
        assert tally.send(client, edge) in (200, 201)  # reconnected by itself
    used = database_row(tenant)
    figures.record(
        "edge_faults",
        "database",
        describe_database(),
        variant=f"{edge}: connection killed mid-request",
        requests=sum(tally.statuses.values()),
        statuses=dict(sorted(tally.statuses.items())),
        admitted=tally.admitted,
        stored=used,
        **discrepancy(tally.admitted, used),
    )
    assert killer.kills == 3
    assert used == tally.admitted == 6


# --- Redis stopped and started again ------------------------------------------------------------

OUTAGE = {
    "REDIS_SOCKET_TIMEOUT": 0.3,
    "REDIS_CONNECT_TIMEOUT": 0.3,
    "REDIS_BREAKER_FAILURES": 3,
    "REDIS_BREAKER_SECONDS": 0.5,
}


@pytest.mark.usefixtures("site")
@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_stopped_gives_the_fail_mode_at_every_edge_and_loses_nothing(
    mode: str,
    private_redis: PrivateRedis,  # noqa: F811
    figures: Figures,
) -> None:
    limits = {
        **redis_settings(private_redis.url, "uq", REDIS_FAIL_MODE=mode, **OUTAGE),
        "PATH_RULES": edges.PATH_RULES,
    }
    with override_settings(USAGE_LIMITS=limits):
        tenant = TenantFactory(plan=plan_with_limits("EDGE", api_calls=1000))
        client = member_client(tenant)
        tally = Tally()
        for edge in EDGES:
            assert tally.send(client, edge) in (200, 201)
        flush_counters()

        private_redis.stop()  # killed: no save, its data is gone
        expected = (200, 201) if mode == "open" else (503,)
        for _ in range(2):
            for edge in EDGES:
                assert tally.send(client, edge) in expected, edge
                if edge != "api":
                    assert tally.send(client, edge, accept=BROWSER) in expected, edge

        private_redis.start()  # empty: re-seeded from the database
        time.sleep(OUTAGE["REDIS_BREAKER_SECONDS"] + 0.1)
        for edge in EDGES:
            assert tally.send(client, edge) in (200, 201)
        flush_counters()
        start = int(counter(tenant).period.start.timestamp())
        in_redis = int(private_redis.client().get(f"uq:{{{tenant.pk}}}:api_calls:{start}") or 0)
        in_database = database_row(tenant)

    figures.record(
        "edge_faults",
        "redis",
        describe_database(),
        variant=f"every edge: Redis stopped, fail {mode}",
        requests=sum(tally.statuses.values()),
        statuses=dict(sorted(tally.statuses.items())),
        admitted=tally.admitted,
        stored=in_database,
        **discrepancy(tally.admitted, in_database),
    )
    assert in_redis == in_database == tally.admitted
