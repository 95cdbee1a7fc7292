"""System checks for ``USAGE_LIMITS["BILLING"]`` (ids ``usage_limits.E070``-``E079``, ``W070``-).

An absent or empty ``BILLING`` is valid: billing is simply off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from usage_limits.billing.conf import AGGREGATIONS, BILLING_DEFAULTS
from usage_limits.billing.ledger import MAX_IDENTIFIER_LENGTH
from usage_limits.models import FeatureKind

EXAMPLE = (
    'e.g. "BILLING": {"METERS": {"api_calls": "api_calls"}, '
    '"PRICING": {"api_calls": {"included": 10000, "unit_price": "0.001"}}}'
)
SECRET_PREFIXES = ("sk_", "rk_", "pk_", "whsec_")

# name -> (smallest allowed value, whole numbers only)
NUMBERS: dict[str, tuple[float, bool]] = {
    "BATCH_SIZE": (1, True),
    "LEASE_SECONDS": (1, False),
    "REQUEST_TIMEOUT": (0.1, False),
    "RETRY_BASE_SECONDS": (0, False),
    "RETRY_MAX_SECONDS": (0, False),
    "MAX_ATTEMPTS": (1, True),
    "MAX_CONSECUTIVE_FAILURES": (1, True),
    "WEBHOOK_TOLERANCE": (1, True),
}


def _error(id_: int, msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id=f"usage_limits.E{id_:03d}")


def _warning(id_: int, msg: str, hint: str) -> Warning:
    return Warning(msg, hint=hint, id=f"usage_limits.W{id_:03d}")


@register(Tags.compatibility)
def check_billing(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "USAGE_LIMITS", {})
    if not isinstance(raw, Mapping):
        return []  # usage_limits.E001 says so already
    billing = raw.get("BILLING", {})
    if billing is None or billing == {}:
        return []
    if not isinstance(billing, Mapping):
        return [_error(70, "USAGE_LIMITS['BILLING'] must be a dict.", EXAMPLE)]
    messages: list[CheckMessage] = []
    unknown = sorted(set(billing) - set(BILLING_DEFAULTS))
    if unknown:
        messages.append(
            _warning(
                71,
                f"USAGE_LIMITS['BILLING'] has unknown keys: {', '.join(map(str, unknown))}.",
                f"Known keys: {', '.join(sorted(BILLING_DEFAULTS))}.",
            )
        )
    features = raw.get("FEATURES", {})
    features = features if isinstance(features, Mapping) else {}
    messages += _check_meters(billing.get("METERS", {}), features)
    messages += _check_pricing(billing.get("PRICING", {}), billing.get("CURRENCY", "usd"))
    messages += _check_options(billing)
    messages += _check_secrets(billing)
    return messages


def _check_meters(meters: Any, features: Mapping[str, Any]) -> list[CheckMessage]:
    hint = 'Map features to Stripe meter event names, e.g. {"api_calls": "api_calls"}.'
    if not isinstance(meters, Mapping):
        return [_error(71, "USAGE_LIMITS['BILLING']['METERS'] must be a dict.", hint)]
    messages: list[CheckMessage] = []
    for feature, event_name in meters.items():
        where = f"USAGE_LIMITS['BILLING']['METERS'][{feature!r}]"
        if not isinstance(event_name, str) or not 0 < len(event_name) <= 100:
            messages.append(
                _error(71, f"{where} must be a meter event name of 1 to 100 characters.", hint)
            )
        declared = features.get(feature)
        if features and declared is None:
            messages.append(
                _error(
                    71,
                    f"{where}: {feature!r} is not in USAGE_LIMITS['FEATURES'].",
                    f"Use one of: {', '.join(map(str, features))}.",
                )
            )
        elif isinstance(declared, Mapping) and declared.get("kind") == FeatureKind.BOOLEAN:
            messages.append(
                _error(71, f"{where}: {feature!r} is a boolean feature: it has no usage.", hint)
            )
    return messages


def _check_pricing(pricing: Any, default_currency: Any) -> list[CheckMessage]:
    hint = '{"api_calls": {"included": 10000, "unit_price": "0.001", "currency": "usd"}}'
    if not isinstance(pricing, Mapping):
        return [_error(72, "USAGE_LIMITS['BILLING']['PRICING'] must be a dict.", hint)]
    messages: list[CheckMessage] = []
    currencies = set()
    for feature, price in pricing.items():
        where = f"USAGE_LIMITS['BILLING']['PRICING'][{feature!r}]"
        if not isinstance(price, Mapping):
            messages.append(_error(72, f"{where} must be a dict.", hint))
            continue
        unit_price = price.get("unit_price")
        if not _is_price(unit_price):
            messages.append(
                _error(
                    72,
                    f"{where}['unit_price'] = {unit_price!r} is not a price.",
                    'Write prices as strings (or Decimals), never floats: "0.001".',
                )
            )
        included = price.get("included")
        values = included.values() if isinstance(included, Mapping) else [included]
        if not all(_is_included(v) for v in values):
            messages.append(
                _error(
                    72,
                    f"{where}['included'] = {included!r} is not a number of units.",
                    "A whole number (-1 or None: unlimited), a dict of plan code to one, or "
                    "leave it out to include the plan's limit.",
                )
            )
        currency = price.get("currency", default_currency)
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            messages.append(
                _error(72, f"{where}: currency {currency!r} is not an ISO code.", 'e.g. "usd"')
            )
        else:
            currencies.add(currency.lower())
    if len(currencies) > 1:
        messages.append(
            _error(
                73,
                f"USAGE_LIMITS['BILLING']['PRICING'] mixes currencies: "
                f"{', '.join(sorted(currencies))}.",
                "One bill has one currency: price every feature in the same one.",
            )
        )
    return messages


def _is_price(value: Any) -> bool:
    if isinstance(value, bool | float) or not isinstance(value, str | int | Decimal):
        return False
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return False
    return price.is_finite() and price >= 0


def _is_included(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= -1)


def _check_options(billing: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    aggregate = billing.get("AGGREGATE")
    if aggregate not in AGGREGATIONS:
        messages.append(
            _error(
                74,
                f"USAGE_LIMITS['BILLING']['AGGREGATE'] = {aggregate!r} is not an aggregation.",
                'Use None (one meter event per usage event) or "hour".',
            )
        )
    for name, (smallest, whole) in NUMBERS.items():
        value = billing.get(name, BILLING_DEFAULTS[name])
        kinds = int if whole else int | float
        if isinstance(value, bool) or not isinstance(value, kinds) or value < smallest:
            messages.append(
                _error(
                    75,
                    f"USAGE_LIMITS['BILLING'][{name!r}] = {value!r} must be "
                    f"{'a whole number' if whole else 'a number'} of at least {smallest}.",
                    f"The default is {BILLING_DEFAULTS[name]!r}.",
                )
            )
    plans = billing.get("PRICE_PLANS", {})
    if not isinstance(plans, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in plans.items()
    ):
        messages.append(
            _error(
                76,
                "USAGE_LIMITS['BILLING']['PRICE_PLANS'] must map Stripe price ids to plan codes.",
                'e.g. {"price_1Pxyz": "PRO"}',
            )
        )
    for name in ("DOWNGRADE_PLAN", "API_BASE"):
        value = billing.get(name)
        if value is not None and not isinstance(value, str):
            messages.append(
                _error(76, f"USAGE_LIMITS['BILLING'][{name!r}] must be a string or None.", "")
            )
    prefix = billing.get("IDENTIFIER_PREFIX", "")
    if not isinstance(prefix, str) or len(prefix) > MAX_IDENTIFIER_LENGTH // 3:
        messages.append(
            _error(
                76,
                "USAGE_LIMITS['BILLING']['IDENTIFIER_PREFIX'] must be a short string.",
                'e.g. "prod-": at most 33 characters, Stripe identifiers hold 100.',
            )
        )
    lease, timeout = billing.get("LEASE_SECONDS", 300), billing.get("REQUEST_TIMEOUT", 10)
    if _number(lease) and _number(timeout) and lease <= 2 * timeout:
        messages.append(
            _warning(
                72,
                f"LEASE_SECONDS ({lease}) is not well above REQUEST_TIMEOUT ({timeout}).",
                "A slow request could outlive its lease and another reporter send the same "
                "event again (Stripe deduplicates it, but it is wasted work).",
            )
        )
    return messages


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_secrets(billing: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name in ("STRIPE_API_KEY_ENV", "WEBHOOK_SECRET_ENV"):
        value = billing.get(name, BILLING_DEFAULTS[name])
        if not isinstance(value, str) or not value:
            messages.append(
                _error(
                    77,
                    f"USAGE_LIMITS['BILLING'][{name!r}] must name an environment variable.",
                    f"e.g. {BILLING_DEFAULTS[name]!r}",
                )
            )
        elif value.startswith(SECRET_PREFIXES):
            messages.append(
                _error(
                    77,
                    f"USAGE_LIMITS['BILLING'][{name!r}] holds a secret, not the name of an "
                    "environment variable.",
                    "Keep secrets out of settings: put the key in the environment and name "
                    f"the variable here, e.g. {BILLING_DEFAULTS[name]!r}. Rotate the key.",
                )
            )
    meters = billing.get("METERS", {})
    key_env = billing.get("STRIPE_API_KEY_ENV", BILLING_DEFAULTS["STRIPE_API_KEY_ENV"])
    if (
        isinstance(meters, Mapping)
        and meters
        and isinstance(key_env, str)
        and not os.environ.get(key_env)
    ):
        messages.append(
            _warning(
                70,
                f"Features have Stripe meters ({', '.join(map(str, meters))}) but the "
                f"environment variable {key_env} is not set: usage will not be reported.",
                f"Set {key_env} to a Stripe secret or restricted key with write access to "
                "meter events; events wait as pending until then.",
            )
        )
    return messages
