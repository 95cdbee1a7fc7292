"""The app's settings, read from ``settings.USAGE_LIMITS`` at call time.

Every property reads the Django setting again, so ``override_settings`` and
``django.test.override_settings(USAGE_LIMITS=...)`` take effect at once. Values are validated at
start-up by :mod:`usage_limits.checks`; the properties here assume the checks passed and only
apply defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # feature name -> {"kind": "metered" | "allocation" | "boolean", "period": ..., "label": ...}
    "FEATURES": {},
    # plan code -> {feature: limit} (the seeds' shape), or {"name": ..., "limits": {feature: limit}}
    "PLANS": {},
    "DEFAULT_PERIOD": "monthly",
    "TIME_ZONE": "UTC",
    # meter colours: amber from 60 %, red from 85 %
    "METER_THRESHOLDS": {"amber": 60, "red": 85},
    # usage warnings (signals and callbacks), each fired once per tenant, feature, period and level
    "WARNING_THRESHOLDS": [80, 100],
    "RESET_MODE": "lazy",
    "PAST_DUE_GRACE_DAYS": 7,
    "STORE": "usage_limits.backends.database.DatabaseStore",
    # the database alias the counters are written through (see docs/architecture.md)
    "DATABASE_ALIAS": "default",
    "CACHE_ALIAS": "default",
    "CACHE_TIMEOUT": 300,
    "TENANT_RESOLVER": "usage_limits.tenancy.resolve_tenant_from_membership",
    "UPGRADE_URL": None,
    # --- enforcement at the edges (decorators, middleware, DRF; see docs/enforcement.md) ---
    # A user in several tenants picks one with this header (slug or id), checked against their
    # memberships. None turns header picking off.
    "TENANT_HEADER": "X-Tenant",
    # Requests to an enforced view without a tenant: "reject" (401 anonymous, 403 signed in
    # without a tenant) or "allow" (pass through, counted nowhere).
    "ANONYMOUS_REQUESTS": "reject",
    # UsageLimitsMiddleware: regex on request.path_info -> feature name (or {"feature": ...,
    # "quantity": n, "count": "always" | "success"}). The first matching rule applies.
    "PATH_RULES": {},
    # Paths the middleware never counts, checked before PATH_RULES.
    "EXEMPT_PATHS": [r"^/admin/", r"^/static/", r"^/media/", r"^/health/?$", r"^/healthz/?$"],
    # count="success": answers with these statuses are refunded ("4xx", "5xx" or exact codes).
    "NOT_BILLABLE_STATUSES": ["4xx", "5xx"],
    # UsageLimitsMiddleware: write a UsageEvent per counted request with path, method, status
    # and duration in its metadata (one more INSERT and UPDATE per request).
    "REQUEST_EVENTS": False,
    # Dotted paths (or lists of them) called as callback(tenant=..., feature=..., current=...,
    # limit=..., percentage=...) after commit; a callback that raises is logged, never re-raised.
    "ON_USAGE_WARNING": None,
    "ON_LIMIT_EXCEEDED": None,
}


def _user_settings() -> Mapping[str, Any]:
    value = getattr(settings, "USAGE_LIMITS", {})
    return value if isinstance(value, Mapping) else {}


class UsageLimitsSettings:
    """Typed access to ``settings.USAGE_LIMITS`` with defaults."""

    def get(self, name: str) -> Any:
        return _user_settings().get(name, DEFAULTS[name])

    @property
    def FEATURES(self) -> Mapping[str, Mapping[str, Any]]:
        features: Mapping[str, Mapping[str, Any]] = self.get("FEATURES")
        return features

    @property
    def PLANS(self) -> Mapping[str, Any]:
        plans: Mapping[str, Any] = self.get("PLANS")
        return plans

    @property
    def DEFAULT_PERIOD(self) -> str:
        return str(self.get("DEFAULT_PERIOD"))

    @property
    def TIME_ZONE(self) -> str:
        return str(self.get("TIME_ZONE"))

    @property
    def AMBER_PERCENT(self) -> float:
        return float(self.get("METER_THRESHOLDS").get("amber", 60))

    @property
    def RED_PERCENT(self) -> float:
        return float(self.get("METER_THRESHOLDS").get("red", 85))

    @property
    def WARNING_THRESHOLDS(self) -> tuple[int, ...]:
        return tuple(sorted(int(t) for t in self.get("WARNING_THRESHOLDS")))

    @property
    def RESET_MODE(self) -> str:
        return str(self.get("RESET_MODE"))

    @property
    def PAST_DUE_GRACE_DAYS(self) -> int:
        return int(self.get("PAST_DUE_GRACE_DAYS"))

    @property
    def STORE(self) -> str:
        return str(self.get("STORE"))

    @property
    def DATABASE_ALIAS(self) -> str:
        return str(self.get("DATABASE_ALIAS"))

    @property
    def CACHE_ALIAS(self) -> str:
        return str(self.get("CACHE_ALIAS"))

    @property
    def CACHE_TIMEOUT(self) -> int:
        return int(self.get("CACHE_TIMEOUT"))

    @property
    def TENANT_RESOLVER(self) -> str:
        return str(self.get("TENANT_RESOLVER"))

    @property
    def UPGRADE_URL(self) -> str | None:
        value = self.get("UPGRADE_URL")
        return None if value is None else str(value)

    @property
    def TENANT_HEADER(self) -> str | None:
        value = self.get("TENANT_HEADER")
        return str(value) if value else None

    @property
    def ANONYMOUS_REQUESTS(self) -> str:
        return str(self.get("ANONYMOUS_REQUESTS"))

    @property
    def PATH_RULES(self) -> Mapping[str, Any]:
        rules: Mapping[str, Any] = self.get("PATH_RULES")
        return rules

    @property
    def EXEMPT_PATHS(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.get("EXEMPT_PATHS"))

    @property
    def NOT_BILLABLE_STATUSES(self) -> tuple[int | str, ...]:
        return tuple(self.get("NOT_BILLABLE_STATUSES"))

    @property
    def REQUEST_EVENTS(self) -> bool:
        return bool(self.get("REQUEST_EVENTS"))

    @property
    def ON_USAGE_WARNING(self) -> Any:
        return self.get("ON_USAGE_WARNING")

    @property
    def ON_LIMIT_EXCEEDED(self) -> Any:
        return self.get("ON_LIMIT_EXCEEDED")


conf = UsageLimitsSettings()
