"""Through real HTTP: many clients at once against a limit, on a live server.

Each thread opens its own HTTP connection; the live server answers each request in its own
thread with its own database connection, so the requests really race for the last units.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.concurrency import run_in_threads
from usage_limits import check_limit
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.enforcement_app.urls"),
]

REQUESTS = 40
LIMIT = 10


def _get(url: str, cookie: str) -> tuple[int, dict[str, str]]:
    headers = {"Cookie": cookie, "Accept": "application/json"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (the live server)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@pytest.mark.parametrize("path", ["/fn/quota/", "/drf/quota/"])
def test_forty_concurrent_requests_against_a_limit_of_ten(live_server: Any, path: str) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FREE", api_calls=LIMIT))
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    results = run_in_threads(REQUESTS, lambda _i: _get(live_server.url + path, cookie))

    statuses = Counter(status for status, _headers in results)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}
    assert check_limit(tenant, "api_calls").used == LIMIT
    for status, headers in results:
        assert "RateLimit" in headers
        if status == 429:
            assert int(headers["Retry-After"]) > 0
