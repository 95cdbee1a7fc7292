"""django-usage-limits: per-plan feature quotas for Django.

The engine's functions are importable from here (``from usage_limits import consume``); they are
loaded on first use so that importing the package does not touch models before apps are ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# The response header fields enforcement sets: the IETF RateLimit fields on every enforced answer,
# Retry-After on denials. None of them is CORS-safelisted, so a script on another origin reads
# them only if the site lists them in Access-Control-Expose-Headers (with django-cors-headers:
# CORS_EXPOSE_HEADERS = [*RATELIMIT_HEADERS]). Safe to import from settings: it loads nothing.
RATELIMIT_HEADERS: tuple[str, ...] = ("RateLimit-Policy", "RateLimit", "Retry-After")

_EXPORTS = {
    "check_limit": "usage_limits.engine",
    "consume": "usage_limits.engine",
    "get_usage": "usage_limits.engine",
    "has_feature": "usage_limits.engine",
    "increment_usage": "usage_limits.engine",
    "invalid_events": "usage_limits.engine",
    "record_events": "usage_limits.engine",
    "UsageEventInput": "usage_limits.events",
    "refund": "usage_limits.engine",
    "reset_usage": "usage_limits.engine",
    "set_usage": "usage_limits.engine",
    "Decision": "usage_limits.results",
    "DenialReason": "usage_limits.results",
    "FeatureUsage": "usage_limits.results",
    "TenantUsage": "usage_limits.results",
    "Level": "usage_limits.levels",
}

__all__ = [
    "RATELIMIT_HEADERS",
    "Decision",
    "DenialReason",
    "FeatureUsage",
    "Level",
    "TenantUsage",
    "UsageEventInput",
    "check_limit",
    "consume",
    "get_usage",
    "has_feature",
    "increment_usage",
    "invalid_events",
    "record_events",
    "refund",
    "reset_usage",
    "set_usage",
]

if TYPE_CHECKING:  # pragma: no cover
    from usage_limits.engine import (
        check_limit,
        consume,
        get_usage,
        has_feature,
        increment_usage,
        invalid_events,
        record_events,
        refund,
        reset_usage,
        set_usage,
    )
    from usage_limits.events import UsageEventInput
    from usage_limits.levels import Level
    from usage_limits.results import Decision, DenialReason, FeatureUsage, TenantUsage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'usage_limits' has no attribute {name!r}")
    return getattr(import_module(module), name)
