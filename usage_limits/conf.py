"""The app's settings, read from ``settings.USAGE_LIMITS`` at call time.

Every property reads the Django setting again, so ``override_settings`` and
``django.test.override_settings(USAGE_LIMITS=...)`` take effect at once. Values are validated at
start-up by :mod:`usage_limits.checks`; the properties here assume the checks passed and only
apply defaults.
"""

from __future__ import annotations

import os
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
