"""What a denied (or allowed) enforced request tells the client: body and headers.

Shared by every edge (decorators, middleware, DRF classes, the events API) so that a denial looks
the same wherever it happens.

Headers follow the IETF httpapi RateLimit fields draft (-10)::

    RateLimit-Policy: "free-api_calls";q=100;w=2592000
    RateLimit: "free-api_calls";r=0;t=1209600

``q`` is the quota, ``w`` the period's length in seconds, ``r`` what remains and ``t`` the seconds
until the period ends. Allocation features never reset, so they carry neither ``w`` nor ``t``, and
a denial of one has no ``Retry-After``. Unlimited features send no RateLimit fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from usage_limits.conf import conf
from usage_limits.results import Decision, DenialReason

LIMIT_REACHED_MESSAGE = "Limit reached. Upgrade your plan."
SUBSCRIPTION_MESSAGE = "Your subscription is not active. Update your billing details."


def policy_name(decision: Decision) -> str:
    return f"{decision.plan.lower()}-{decision.feature}"


def status_code(decision: Decision) -> int:
    """429 for a used-up quota, 402 for a subscription that no longer allows use."""
    if decision.reason == DenialReason.SUBSCRIPTION_INACTIVE:
        return 402
    return 429


def retry_after_seconds(decision: Decision, now: datetime | None = None) -> int | None:
    if decision.reason != DenialReason.QUOTA_EXCEEDED:
        return None
    return _seconds_until_reset(decision, now or timezone.now())


def _seconds_until_reset(decision: Decision, now: datetime) -> int | None:
    """Seconds until the period ends, or ``OVERDUE_RETRY_AFTER`` once it is over.

    A period is over while still counted in only under the scheduled reset mode, until the job
    moves the tenant on: "0 seconds" would send clients straight back into a denial, in a loop.
    """
    seconds = decision.period.seconds_until_end(now)
    if seconds == 0 and decision.period.end is not None:
        return conf.OVERDUE_RETRY_AFTER
    return seconds


def ratelimit_headers(decision: Decision, now: datetime | None = None) -> dict[str, str]:
    """``RateLimit-Policy`` / ``RateLimit`` (and ``Retry-After`` on denials) for a decision."""
    if decision.limit is None:
        return {}
    now = now or timezone.now()
    name = f'"{policy_name(decision)}"'
    policy = f"{name};q={decision.limit}"
    state = f"{name};r={decision.remaining}"
    length = decision.period.length_seconds
    until_end = _seconds_until_reset(decision, now)
    if length is not None:
        policy += f";w={length}"
    if until_end is not None:
        state += f";t={until_end}"
    headers = {"RateLimit-Policy": policy, "RateLimit": state}
    if not decision.allowed:
        retry_after = retry_after_seconds(decision, now)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
    return headers


def denial_payload(decision: Decision) -> dict[str, Any]:
    """The JSON body of a denial, in the seeds' ``{"success": false, "error": ...}`` shape."""
    subscription = decision.reason == DenialReason.SUBSCRIPTION_INACTIVE
    resets_at = decision.resets_at
    return {
        "success": False,
        "error": SUBSCRIPTION_MESSAGE if subscription else LIMIT_REACHED_MESSAGE,
        "code": str(decision.reason or DenialReason.QUOTA_EXCEEDED),
        "feature": decision.feature,
        "plan": decision.plan,
        "limit": decision.limit,
        "used": decision.used,
        "requested": decision.quantity,
        "resets_at": None if resets_at is None else _iso_z(resets_at),
        "upgrade_url": conf.UPGRADE_URL,
    }


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
