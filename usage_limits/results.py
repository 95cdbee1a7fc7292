"""Typed results the engine returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from usage_limits.levels import Level, percent_used, usage_level
from usage_limits.models import FeatureKind
from usage_limits.periods import Period


class DenialReason(StrEnum):
    QUOTA_EXCEEDED = "quota_exceeded"  # 429
    SUBSCRIPTION_INACTIVE = "subscription_inactive"  # 402


class _Measured:
    """Shared arithmetic of a counter against its limit."""

    used: int
    limit: int | None

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    @property
    def percent(self) -> float:
        return percent_used(self.used, self.limit)

    @property
    def level(self) -> Level:
        return usage_level(self.used, self.limit)


@dataclass(frozen=True, slots=True)
class Decision(_Measured):
    """What ``check_limit``, ``consume``, ``increment_usage``, ``refund`` or ``set_usage`` did."""

    allowed: bool
    tenant_id: int
    plan: str
    feature: str
    kind: str
    quantity: int
    used_before: int
    used: int
    limit: int | None
    period: Period
    reason: DenialReason | None = None
    replayed: bool = False  # an idempotency key seen before: the original outcome, counted once
    # The ledger key the units were recorded under: the caller's idempotency key, or the one
    # consume() / increment_usage() generate for a feature billed through Stripe (None when no
    # ledger row has a key). ``refund(..., idempotency_key=...)`` gives exactly these units back,
    # and keeps them from being billed if they have not been yet.
    idempotency_key: str | None = None
    # When the count was made (taken just before it): a refund of it gives nothing back from a
    # counter reset since (see usage_limits.engine.give_back). None for what counted nothing.
    counted_at: datetime | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def resets_at(self) -> datetime | None:
        return self.period.end


@dataclass(frozen=True, slots=True)
class FeatureUsage(_Measured):
    feature: str
    label: str
    kind: str
    used: int
    limit: int | None
    period: Period | None
    included: bool = True
    overridden: bool = False

    @property
    def current(self) -> int:
        return self.used

    @property
    def resets_at(self) -> datetime | None:
        return None if self.period is None else self.period.end

    # A boolean feature is included or not (``included``); it has no usage to measure, so it is
    # never "100 % used" or red, which an API client would read as a quota used up.
    @property
    def percent(self) -> float:
        if self.kind == FeatureKind.BOOLEAN:
            return 0.0
        return percent_used(self.used, self.limit)

    @property
    def level(self) -> Level:
        if self.kind == FeatureKind.BOOLEAN:
            return Level.OK
        return usage_level(self.used, self.limit)

    def as_dict(self) -> dict[str, Any]:
        """The seeds' ``GET /api/usage`` item, with the extra fields the meters need."""
        return {
            "feature": self.feature,
            "label": self.label,
            "kind": self.kind,
            "current": self.used,
            "limit": -1 if self.limit is None else self.limit,
            "remaining": self.remaining,
            "percent": round(self.percent, 1),
            "level": str(self.level),
            "unlimited": self.unlimited,
            "included": self.included,
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TenantUsage:
    tenant_id: int
    tenant_name: str
    plan: str
    plan_name: str
    subscription_status: str
    features: list[FeatureUsage] = field(default_factory=list)

    def feature(self, name: str) -> FeatureUsage:
        for usage in self.features:
            if usage.feature == name:
                return usage
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "plan_name": self.plan_name,
            "subscription_status": self.subscription_status,
            "features": [usage.as_dict() for usage in self.features],
        }


@dataclass(frozen=True, slots=True)
class ResetResult:
    feature: str
    period: Period
    value_before: int
    reset_id: int
