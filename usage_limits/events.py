"""Usage events reported after the fact, one at a time or in batches (the events API, imports).

An event names a feature, a quantity and usually an idempotency key. :func:`validate_events`
checks a whole batch against the tenant's rules before anything is counted, so a batch is either
recorded whole or refused whole with a reason per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from usage_limits.conf import conf
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidQuantity,
    UnknownFeature,
)
from usage_limits.models import FeatureKind
from usage_limits.quantities import validate_quantity
from usage_limits.rules import FeatureRule, TenantRules

# Stripe's meter event identifier and the ledger column are both 100 characters long.
MAX_IDEMPOTENCY_KEY_LENGTH = 100


@dataclass(frozen=True, slots=True)
class UsageEventInput:
    """One event to record: ``quantity`` of ``feature``, at ``timestamp`` (default: now).

    With ``enforce`` the event is consumed (counted only if it fits within the limit, as
    :func:`usage_limits.consume`); without, it is recorded even past the limit (overage, as
    :func:`usage_limits.increment_usage`).
    """

    feature: str
    quantity: int = 1
    idempotency_key: str | None = None
    timestamp: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    enforce: bool = False


def validate_events(
    rules: TenantRules,
    events: Sequence[UsageEventInput],
    *,
    now: datetime,
    period_start: Mapping[str, datetime | None],
) -> dict[int, dict[str, str]]:
    """``{index: {field: message}}`` for every event the tenant cannot record now (empty: fine).

    ``period_start`` gives, per metered feature, the start of the period being counted: an event
    from before it belongs to a period that is already closed and is refused rather than counted
    in the wrong one.
    """
    errors: dict[int, dict[str, str]] = {}
    latest = now + timedelta(seconds=conf.EVENT_CLOCK_SKEW_SECONDS)
    for index, event in enumerate(events):
        problems: dict[str, str] = {}
        rule = _rule_or_problem(rules, event.feature, problems)
        try:
            validate_quantity(event.quantity)
        except InvalidQuantity as exc:
            problems["quantity"] = str(exc)
        key = event.idempotency_key
        if key is not None and (
            not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        ):
            problems["idempotency_key"] = (
                f"An idempotency key is a string of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters."
            )
        moment = event.timestamp
        if moment is not None:
            if moment.tzinfo is None or moment.utcoffset() is None:
                problems["timestamp"] = "The timestamp needs a time zone (e.g. a trailing Z)."
            elif moment > latest:
                problems["timestamp"] = "The timestamp is in the future."
            elif rule is not None:
                start = period_start.get(rule.feature)
                if start is not None and moment < start:
                    problems["timestamp"] = (
                        "The timestamp is older than the current period, which started at "
                        f"{start.isoformat()}; closed periods cannot be changed."
                    )
        if problems:
            errors[index] = problems
    return errors


def _rule_or_problem(
    rules: TenantRules, feature: Any, problems: dict[str, str]
) -> FeatureRule | None:
    if not isinstance(feature, str) or not feature:
        problems["feature"] = "A feature is a non-empty name."
        return None
    try:
        rule = rules.rule(feature)
    except (UnknownFeature, FeatureNotInPlan) as exc:
        problems["feature"] = str(exc)
        return None
    if rule.kind == FeatureKind.BOOLEAN:
        problems["feature"] = f"{feature!r} is a boolean feature: it has no counter."
        return None
    return rule
