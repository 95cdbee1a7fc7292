"""A single-page app on another origin: it must see denials and read the RateLimit fields.

Through django-cors-headers (in the ``[dev]`` extra), as sites set it up: answers reach a script
on another origin only with ``Access-Control-Allow-Origin``, and a script reads a field that is
not CORS-safelisted only if ``Access-Control-Expose-Headers`` names it (see ``usage_limits.W023``
and ``W024``).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from tests.enforcement_app.support import limited_tenant, member  # noqa: F401  (fixtures)
from usage_limits import RATELIMIT_HEADERS

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]

APP = "https://app.example.com"
CORS = "corsheaders.middleware.CorsMiddleware"
OURS = "usage_limits.middleware.UsageLimitsMiddleware"


@pytest.fixture(autouse=True)
def cors_site(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = [APP]
    settings.CORS_ALLOW_CREDENTIALS = True  # the app sends the session cookie
    settings.CORS_EXPOSE_HEADERS = [*RATELIMIT_HEADERS]
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "PATH_RULES": {r"^/api/": "api_calls"}}


def exposed(response: Any) -> set[str]:
    return {name.strip() for name in response["Access-Control-Expose-Headers"].split(",")}


@pytest.mark.parametrize("path", ["/api/plain/", "/fn/quota/", "/drf/quota/"])
def test_another_origin_sees_the_denial_and_reads_its_fields(
    settings: Any, client: Client, member: AbstractBaseUser, path: str
) -> None:
    settings.MIDDLEWARE = [CORS, *settings.MIDDLEWARE, OURS]
    client.force_login(member)
    responses = [client.get(path, headers={"origin": APP}) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    for response in responses:
        assert response["Access-Control-Allow-Origin"] == APP
        assert exposed(response) == set(RATELIMIT_HEADERS)
    assert responses[0]["RateLimit"].startswith('"free-api_calls";r=2;')
    assert int(responses[3]["Retry-After"]) > 0


def test_our_middleware_above_the_cors_middleware_hides_its_denials(
    settings: Any, client: Client, member: AbstractBaseUser
) -> None:
    # What W024 warns of: the browser drops a cross-origin answer without CORS headers, so the
    # script sees a network error, not the 429 and its Retry-After.
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, OURS, CORS]
    client.force_login(member)
    statuses = []
    for _ in range(4):
        response = client.get("/api/plain/", headers={"origin": APP})
        statuses.append((response.status_code, response.has_header("Access-Control-Allow-Origin")))
    assert statuses == [(200, True), (200, True), (200, True), (429, False)]
