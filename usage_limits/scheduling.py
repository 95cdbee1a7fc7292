"""``POST /usage/reset-expired/``: the HTTP trigger of scheduled resets, for hosted cron services.

The caller proves itself with a shared key sent in a header, ``Authorization: Bearer <key>`` or
``X-Usage-Limits-Key: <key>``, never in the URL or the body (both end up in access logs). The
expected key is read from the environment variable that ``USAGE_LIMITS["RESET_API_KEY_ENV"]``
names (``USAGE_LIMITS_RESET_API_KEY`` by default), at request time, so rotating it needs no deploy
of settings. Keys are compared in constant time. No key: 401; a wrong key: 403; no key configured
on the server: 503. In all three cases nothing is read or changed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from usage_limits.conf import conf
from usage_limits.resets import reset_expired

logger = logging.getLogger("usage_limits")

KEY_HEADER = "X-Usage-Limits-Key"


def presented_key(request: HttpRequest) -> str | None:
    """The key the caller sent, from ``Authorization: Bearer`` or ``X-Usage-Limits-Key``."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    header = request.headers.get(KEY_HEADER, "").strip()
    return header or None


def expected_key() -> str:
    return os.environ.get(conf.RESET_API_KEY_ENV, "").strip()


def key_matches(presented: str, expected: str) -> bool:
    # compare_digest takes the same time wherever the first difference is; comparing digests
    # of equal length also keeps the key's length from showing in the timing.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


@csrf_exempt  # a machine caller with a key, not a browser session: there is no cookie to forge
@require_POST
def reset_expired_view(request: HttpRequest) -> JsonResponse:
    presented = presented_key(request)
    if presented is None:
        response = JsonResponse(
            {"error": f"Send the key as 'Authorization: Bearer <key>' or '{KEY_HEADER}: <key>'."},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="usage_limits"'
        return response
    expected = expected_key()
    if not expected:
        return JsonResponse(
            {"error": f"Scheduled resets over HTTP are off: ${conf.RESET_API_KEY_ENV} is not set."},
            status=503,
        )
    if not key_matches(presented, expected):
        logger.warning(
            "usage_limits: POST %s with a wrong key from %s",
            request.path,
            request.META.get("REMOTE_ADDR", "?"),
        )
        return JsonResponse({"error": "Wrong key."}, status=403)
    return JsonResponse(reset_expired().as_dict())
