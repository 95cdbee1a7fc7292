"""Overage estimates: what the current period's usage will cost beyond what the plan includes.

Prices come from ``USAGE_LIMITS["BILLING"]["PRICING"]`` (the seeds' ``USAGE_PRICING``)::

    "PRICING": {
        "api_calls": {"included": 10000, "unit_price": "0.001", "unit_name": "API calls"},
        "tokens": {"included": {"FREE": 0, "PRO": 100000}, "unit_price": "0.00001"},
        "storage_gb": {"unit_price": "0.02"},   # included: the plan's limit for the feature
    }

Money is :class:`~decimal.Decimal` throughout (prices are written as strings, never floats);
each line is rounded half-up to the currency's minor unit, as an invoice line is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from usage_limits.billing.conf import billing_conf
from usage_limits.engine import TenantRef, get_usage
from usage_limits.models import FeatureKind
from usage_limits.periods import Period
from usage_limits.results import FeatureUsage, TenantUsage

# ISO 4217 currencies Stripe treats as having no minor unit.
ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)


@dataclass(frozen=True, slots=True)
class LineEstimate:
    """One priced feature: usage, what the plan includes, the overage and its cost."""

    feature: str
    unit_name: str
    used: int
    included: int | None  # None: unlimited, nothing is overage
    overage: int
    unit_price: Decimal
    amount: Decimal
    currency: str
    period: Period | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "unit_name": self.unit_name,
            "used": self.used,
            "included": self.included,
            "overage": self.overage,
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
            "currency": self.currency,
            "period_end": None
            if self.period is None or self.period.end is None
            else self.period.end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Estimate:
    """The overage bill for a tenant's current periods, so far."""

    tenant_id: int
    plan: str
    currency: str
    lines: tuple[LineEstimate, ...]
    total: Decimal

    @property
    def has_overage(self) -> bool:
        return self.total > 0

    def line(self, feature: str) -> LineEstimate:
        return next(line for line in self.lines if line.feature == feature)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts as strings, so no client parses money into a float."""
        return {
            "currency": self.currency,
            "total": str(self.total),
            "lines": [line.as_dict() for line in self.lines],
        }


def estimate_bill(tenant: TenantRef) -> Estimate:
    """The overage breakdown of ``tenant``'s current period for every priced feature.

    Reads usage through :func:`usage_limits.get_usage` (one query, whatever the features).
    """
    return estimate_from_usage(get_usage(tenant))


def estimate_from_usage(usage: TenantUsage) -> Estimate:
    """The same estimate from usage already read (the dashboard and the API read it once)."""
    pricing = billing_conf.PRICING
    currency = billing_conf.CURRENCY
    lines = tuple(
        _line(feature, pricing[feature.feature], usage.plan, currency)
        for feature in usage.features
        if feature.feature in pricing and feature.kind != FeatureKind.BOOLEAN
    )
    currencies = {line.currency for line in lines}
    if len(currencies) > 1:
        raise ImproperlyConfigured(
            f"USAGE_LIMITS['BILLING']['PRICING'] mixes currencies ({', '.join(sorted(currencies))})"
            ": one bill has one currency."
        )
    currency = currencies.pop() if currencies else currency
    total = sum((line.amount for line in lines), Decimal(0))
    return Estimate(
        tenant_id=usage.tenant_id,
        plan=usage.plan,
        currency=currency,
        lines=lines,
        total=quantize(total, currency),
    )


def _line(usage: FeatureUsage, price: Mapping[str, Any], plan: str, default: str) -> LineEstimate:
    currency = str(price.get("currency") or default).lower()
    unit_price = to_money(price.get("unit_price", 0))
    included = included_units(price, plan, usage.limit)
    overage = 0 if included is None else max(usage.used - included, 0)
    return LineEstimate(
        feature=usage.feature,
        unit_name=str(price.get("unit_name") or usage.label),
        used=usage.used,
        included=included,
        overage=overage,
        unit_price=unit_price,
        amount=quantize(unit_price * overage, currency),
        currency=currency,
        period=usage.period,
    )


def included_units(price: Mapping[str, Any], plan: str, limit: int | None) -> int | None:
    """Units the plan includes: a number, a number per plan code, or (absent) the plan's limit."""
    if "included" not in price:
        return limit
    included = price["included"]
    if isinstance(included, Mapping):
        included = included.get(plan, limit)
    if included is None or included == -1:
        return None
    return int(included)


def to_money(value: Any) -> Decimal:
    """A price as a Decimal; floats are refused (0.1 is not a price a float can hold)."""
    if isinstance(value, float):
        raise TypeError(f"Prices are written as strings or Decimals, not floats: {value!r}.")
    return Decimal(str(value))


def quantize(amount: Decimal, currency: str) -> Decimal:
    exponent = Decimal(1) if currency.lower() in ZERO_DECIMAL_CURRENCIES else Decimal("0.01")
    return amount.quantize(exponent, rounding=ROUND_HALF_UP)
