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
    # how far in the future a reported event's timestamp may lie (other services' clocks drift)
    "EVENT_CLOCK_SKEW_SECONDS": 60,
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
    def EVENT_CLOCK_SKEW_SECONDS(self) -> int:
        return int(self.get("EVENT_CLOCK_SKEW_SECONDS"))


conf = UsageLimitsSettings()
