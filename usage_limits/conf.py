"""The app's settings, read from ``settings.USAGE_LIMITS`` at call time.

The setting is looked up once and remembered until Django's ``setting_changed`` signal says it
changed (``override_settings`` and pytest-django's ``settings`` fixture send it), so tests see
new values at once while the enforcement path does not pay for a settings lookup per property.
Values are validated at start-up by :mod:`usage_limits.checks`; the properties here assume the
checks passed and only apply defaults.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

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
    # the environment variable that holds the key of POST /usage/reset-expired/ (scheduled mode);
    # the key itself never goes into settings files
    "RESET_API_KEY_ENV": "USAGE_LIMITS_RESET_API_KEY",
    "PAST_DUE_GRACE_DAYS": 7,
    # seconds a denied client is told to wait when its period has ended but the scheduled reset
    # job has not run yet (reset mode "scheduled"): the period's end is then in the past
    "OVERDUE_RETRY_AFTER": 60,
    "STORE": "usage_limits.backends.database.DatabaseStore",
    # the database alias the counters are written through (see docs/architecture.md)
    "DATABASE_ALIAS": "default",
    "CACHE_ALIAS": "default",
    "CACHE_TIMEOUT": 300,
    "TENANT_RESOLVER": "usage_limits.tenancy.resolve_tenant_from_membership",
    "UPGRADE_URL": None,
    # keep daily usage per tenant and feature for the history chart (one more write per change,
    # folded into the counter's statement on PostgreSQL; see docs/dashboard.md)
    "HISTORY": True,
    # Stripe reporting, webhooks and pricing (docs/billing.md); empty: billing is off
    "BILLING": {},
    # how far in the future a reported event's timestamp may lie (other services' clocks drift)
    "EVENT_CLOCK_SKEW_SECONDS": 60,
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
    # --- the Redis store (usage_limits.backends.redis.RedisStore), see docs/scaling.md ---------
    # None: the REDIS_URL environment variable
    "REDIS_URL": None,
    # True: connect with redis-py's RedisCluster (keys carry a hash tag per tenant)
    "REDIS_CLUSTER": False,
    "REDIS_KEY_PREFIX": "uq",
    # seconds; redis-py's defaults wait for minutes on a black-holed host
    "REDIS_CONNECT_TIMEOUT": 0.05,
    "REDIS_SOCKET_TIMEOUT": 0.1,
    # retries of a command that hit a connection error or a timeout (0 or 1)
    "REDIS_RETRIES": 1,
    # circuit breaker: after this many failures in a row, skip Redis for this many seconds
    "REDIS_BREAKER_FAILURES": 3,
    "REDIS_BREAKER_SECONDS": 10.0,
    # "open": count in the database while Redis is unreachable; "closed": raise StoreUnavailable
    "REDIS_FAIL_MODE": "open",
    # seconds between two log lines about the same outage (per process)
    "REDIS_FAIL_LOG_INTERVAL": 60.0,
    # seconds a period's counter stays in Redis after the period ends (for the flush to copy it)
    "REDIS_EXPIRE_AFTER_PERIOD": 7 * 24 * 3600,
}


@functools.cache
def _user_settings() -> Mapping[str, Any]:
    value = getattr(settings, "USAGE_LIMITS", {})
    return value if isinstance(value, Mapping) else {}


def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "USAGE_LIMITS":
        _user_settings.cache_clear()
        conf.__dict__.clear()  # the values its cached properties computed from the old setting


setting_changed.connect(_forget_settings, dispatch_uid="usage_limits_conf_changed")


class UsageLimitsSettings:
    """Typed access to ``settings.USAGE_LIMITS`` with defaults.

    The values read on every enforced request are cached properties: computed once per value of
    the setting (an attribute read afterwards, no call), and forgotten with it.
    """

    def get(self, name: str) -> Any:
        return _user_settings().get(name, DEFAULTS[name])

    @cached_property
    def FEATURES(self) -> Mapping[str, Mapping[str, Any]]:
        features: Mapping[str, Mapping[str, Any]] = self.get("FEATURES")
        return features

    @cached_property
    def PLANS(self) -> Mapping[str, Any]:
        plans: Mapping[str, Any] = self.get("PLANS")
        return plans

    @cached_property
    def DEFAULT_PERIOD(self) -> str:
        return str(self.get("DEFAULT_PERIOD"))

    @cached_property
    def TIME_ZONE(self) -> str:
        return str(self.get("TIME_ZONE"))

    @property
    def AMBER_PERCENT(self) -> float:
        return float(self.get("METER_THRESHOLDS").get("amber", 60))

    @property
    def RED_PERCENT(self) -> float:
        return float(self.get("METER_THRESHOLDS").get("red", 85))

    @cached_property
    def WARNING_THRESHOLDS(self) -> tuple[int, ...]:
        # Read on every counted change: sorted once per value of the setting, not per call.
        return tuple(sorted(int(t) for t in self.get("WARNING_THRESHOLDS")))

    @cached_property
    def RESET_MODE(self) -> str:
        return str(self.get("RESET_MODE"))

    @property
    def RESET_API_KEY_ENV(self) -> str:
        return str(self.get("RESET_API_KEY_ENV"))

    @cached_property
    def PAST_DUE_GRACE_DAYS(self) -> int:
        return int(self.get("PAST_DUE_GRACE_DAYS"))

    @cached_property
    def OVERDUE_RETRY_AFTER(self) -> int:
        return int(self.get("OVERDUE_RETRY_AFTER"))

    @cached_property
    def STORE(self) -> str:
        return str(self.get("STORE"))

    @cached_property
    def DATABASE_ALIAS(self) -> str:
        return str(self.get("DATABASE_ALIAS"))

    @cached_property
    def CACHE_ALIAS(self) -> str:
        return str(self.get("CACHE_ALIAS"))

    @cached_property
    def CACHE_TIMEOUT(self) -> int:
        return int(self.get("CACHE_TIMEOUT"))

    @cached_property
    def TENANT_RESOLVER(self) -> str:
        return str(self.get("TENANT_RESOLVER"))

    @cached_property
    def UPGRADE_URL(self) -> str | None:
        value = self.get("UPGRADE_URL")
        return None if value is None else str(value)

    @cached_property
    def HISTORY(self) -> bool:
        return bool(self.get("HISTORY"))

    @cached_property
    def BILLING(self) -> Mapping[str, Any]:
        billing = self.get("BILLING")
        return billing if isinstance(billing, Mapping) else {}

    def stripe_meter(self, feature: str) -> str | None:
        """The Stripe meter event name ``feature``'s usage is reported under, if it has one.

        The engine asks this on every count, so it is one dictionary lookup.
        """
        return self._stripe_meters.get(feature)

    @cached_property
    def _stripe_meters(self) -> Mapping[str, str]:
        meters = self.BILLING.get("METERS")
        if not isinstance(meters, Mapping):
            return {}
        return {str(feature): str(meter) for feature, meter in meters.items() if meter}

    @property
    def EVENT_CLOCK_SKEW_SECONDS(self) -> int:
        return int(self.get("EVENT_CLOCK_SKEW_SECONDS"))

    @cached_property
    def TENANT_HEADER(self) -> str | None:
        value = self.get("TENANT_HEADER")
        return str(value) if value else None

    @cached_property
    def ANONYMOUS_REQUESTS(self) -> str:
        return str(self.get("ANONYMOUS_REQUESTS"))

    @cached_property
    def PATH_RULES(self) -> Mapping[str, Any]:
        rules: Mapping[str, Any] = self.get("PATH_RULES")
        return rules

    @cached_property
    def EXEMPT_PATHS(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.get("EXEMPT_PATHS"))

    @cached_property
    def NOT_BILLABLE_STATUSES(self) -> tuple[int | str, ...]:
        return tuple(self.get("NOT_BILLABLE_STATUSES"))

    @cached_property
    def REQUEST_EVENTS(self) -> bool:
        return bool(self.get("REQUEST_EVENTS"))

    @property
    def ON_USAGE_WARNING(self) -> Any:
        return self.get("ON_USAGE_WARNING")

    @property
    def ON_LIMIT_EXCEEDED(self) -> Any:
        return self.get("ON_LIMIT_EXCEEDED")

    @property
    def REDIS_URL(self) -> str | None:
        value = self.get("REDIS_URL")
        if value is None:
            value = os.environ.get("REDIS_URL")
        return str(value) if value else None

    @property
    def REDIS_CLUSTER(self) -> bool:
        return bool(self.get("REDIS_CLUSTER"))

    @property
    def REDIS_KEY_PREFIX(self) -> str:
        return str(self.get("REDIS_KEY_PREFIX"))

    @property
    def REDIS_CONNECT_TIMEOUT(self) -> float:
        return float(self.get("REDIS_CONNECT_TIMEOUT"))

    @property
    def REDIS_SOCKET_TIMEOUT(self) -> float:
        return float(self.get("REDIS_SOCKET_TIMEOUT"))

    @property
    def REDIS_RETRIES(self) -> int:
        return int(self.get("REDIS_RETRIES"))

    @property
    def REDIS_BREAKER_FAILURES(self) -> int:
        return int(self.get("REDIS_BREAKER_FAILURES"))

    @property
    def REDIS_BREAKER_SECONDS(self) -> float:
        return float(self.get("REDIS_BREAKER_SECONDS"))

    @property
    def REDIS_FAIL_MODE(self) -> str:
        return str(self.get("REDIS_FAIL_MODE"))

    @property
    def REDIS_FAIL_LOG_INTERVAL(self) -> float:
        return float(self.get("REDIS_FAIL_LOG_INTERVAL"))

    @property
    def REDIS_EXPIRE_AFTER_PERIOD(self) -> int:
        return int(self.get("REDIS_EXPIRE_AFTER_PERIOD"))


conf = UsageLimitsSettings()
