"""Typed access to ``USAGE_LIMITS["BILLING"]``, read at call time like the rest of the settings.

Secrets never live in settings: the settings name the environment variables that hold them
(``STRIPE_API_KEY_ENV``, ``WEBHOOK_SECRET_ENV``), so a settings file can be committed as is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from usage_limits.conf import conf

BILLING_DEFAULTS: dict[str, Any] = {
    # the environment variable holding the Stripe secret key (sk_... or a restricted rk_...)
    "STRIPE_API_KEY_ENV": "STRIPE_API_KEY",
    # the environment variable holding the webhook endpoint's signing secret (whsec_...)
    "WEBHOOK_SECRET_ENV": "STRIPE_WEBHOOK_SECRET",
    # feature -> Stripe meter event name; only these features write billable ledger rows
    "METERS": {},
    # feature -> {"included": ..., "unit_price": "0.001", "currency": "usd", "unit_name": ...}
    "PRICING": {},
    "CURRENCY": "usd",
    # Stripe price id -> plan code, for prices not stored on Plan.stripe_price_id
    "PRICE_PLANS": {},
    # plan code a tenant moves to when its subscription is deleted (None: keep plan, canceled)
    "DOWNGRADE_PLAN": None,
    # subscription metadata key naming our tenant id, to link a customer seen for the first time
    "TENANT_METADATA_KEY": "tenant_id",
    # None: one meter event per usage event; "hour": one per customer, meter and hour
    "AGGREGATE": None,
    "BATCH_SIZE": 100,
    # how long a reporter owns the events it claimed; must outlast one request with its timeout
    "LEASE_SECONDS": 300,
    "REQUEST_TIMEOUT": 10,
    # retry delays: RETRY_BASE_SECONDS x 2^(attempt-1), jittered, at most RETRY_MAX_SECONDS
    "RETRY_BASE_SECONDS": 30,
    "RETRY_MAX_SECONDS": 3600,
    # retryable failures after which an event is marked failed for an operator to look at
    "MAX_ATTEMPTS": 25,
    # retryable failures in a row after which a run stops early (Stripe is down or limiting us)
    "MAX_CONSECUTIVE_FAILURES": 20,
    # prefix of every meter event identifier: set one per environment sharing a Stripe account
    "IDENTIFIER_PREFIX": "",
    # Stripe's API base, e.g. a stripe-mock server; None: the SDK's default
    "API_BASE": None,
    # seconds a webhook signature stays valid (Stripe's library default)
    "WEBHOOK_TOLERANCE": 300,
}

AGGREGATIONS = (None, "hour")


class BillingSettings:
    """``USAGE_LIMITS["BILLING"]`` with defaults, validated by ``usage_limits.billing.checks``."""

    def get(self, name: str) -> Any:
        return conf.BILLING.get(name, BILLING_DEFAULTS[name])

    def _mapping(self, name: str) -> Mapping[str, Any]:
        value = self.get(name)
        return value if isinstance(value, Mapping) else {}

    @property
    def METERS(self) -> Mapping[str, str]:
        return {str(k): str(v) for k, v in self._mapping("METERS").items() if v}

    @property
    def PRICING(self) -> Mapping[str, Mapping[str, Any]]:
        return {k: v for k, v in self._mapping("PRICING").items() if isinstance(v, Mapping)}

    @property
    def CURRENCY(self) -> str:
        return str(self.get("CURRENCY")).lower()

    @property
    def PRICE_PLANS(self) -> Mapping[str, str]:
        return {str(k): str(v) for k, v in self._mapping("PRICE_PLANS").items()}

    @property
    def DOWNGRADE_PLAN(self) -> str | None:
        value = self.get("DOWNGRADE_PLAN")
        return str(value) if value else None

    @property
    def TENANT_METADATA_KEY(self) -> str:
        return str(self.get("TENANT_METADATA_KEY") or "")

    @property
    def AGGREGATE(self) -> str | None:
        value = self.get("AGGREGATE")
        return str(value) if value else None

    @property
    def BATCH_SIZE(self) -> int:
        return int(self.get("BATCH_SIZE"))

    @property
    def LEASE_SECONDS(self) -> float:
        return float(self.get("LEASE_SECONDS"))

    @property
    def REQUEST_TIMEOUT(self) -> float:
        return float(self.get("REQUEST_TIMEOUT"))

    @property
    def RETRY_BASE_SECONDS(self) -> float:
        return float(self.get("RETRY_BASE_SECONDS"))

    @property
    def RETRY_MAX_SECONDS(self) -> float:
        return float(self.get("RETRY_MAX_SECONDS"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        return int(self.get("MAX_ATTEMPTS"))

    @property
    def MAX_CONSECUTIVE_FAILURES(self) -> int:
        return int(self.get("MAX_CONSECUTIVE_FAILURES"))

    @property
    def IDENTIFIER_PREFIX(self) -> str:
        return str(self.get("IDENTIFIER_PREFIX") or "")

    @property
    def API_BASE(self) -> str | None:
        value = self.get("API_BASE")
        return str(value) if value else None

    @property
    def WEBHOOK_TOLERANCE(self) -> int:
        return int(self.get("WEBHOOK_TOLERANCE"))

    @property
    def STRIPE_API_KEY_ENV(self) -> str:
        return str(self.get("STRIPE_API_KEY_ENV"))

    @property
    def WEBHOOK_SECRET_ENV(self) -> str:
        return str(self.get("WEBHOOK_SECRET_ENV"))

    @property
    def stripe_api_key(self) -> str | None:
        """The secret key from the environment, or ``None``: reporting is off."""
        return os.environ.get(self.STRIPE_API_KEY_ENV) or None

    @property
    def webhook_secret(self) -> str | None:
        return os.environ.get(self.WEBHOOK_SECRET_ENV) or None


billing_conf = BillingSettings()
