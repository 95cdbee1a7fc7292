"""The quota engine: every edge (decorators, middleware, API, admin, billing) goes through here.

The engine resolves a tenant's effective limit (plan, override, subscription status) from the
cached rules, picks the period, asks the store for one atomic change, and announces thresholds
after commit. It never reads a counter, compares in Python and writes it back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.utils import timezone

from usage_limits import signals
from usage_limits.backends import CounterChange, CounterKey, get_store
from usage_limits.conf import conf
from usage_limits.exceptions import FeatureNotInPlan, UnknownFeature, WrongFeatureKind
from usage_limits.models import (
    FeatureKind,
    ResetMode,
    Tenant,
    UsageAlert,
    UsageEvent,
    UsageReset,
)
from usage_limits.periods import ALL_TIME, Period, period_containing
from usage_limits.quantities import validate_quantity
from usage_limits.results import (
    Decision,
    DenialReason,
    FeatureUsage,
    ResetResult,
    TenantUsage,
)
from usage_limits.rules import CACHE_PREFIX, FeatureRule, TenantRules, tenant_rules

logger = logging.getLogger("usage_limits")

TenantRef = Tenant | int

__all__ = [
    "check_limit",
    "consume",
    "get_usage",
    "has_feature",
    "increment_usage",
    "refund",
    "reset_usage",
    "set_usage",
]


# --- periods ---------------------------------------------------------------------------------


def period_for(rules: TenantRules, rule: FeatureRule, now: datetime | None = None) -> Period:
    """The period a feature's counter lives in right now, given the tenant's reset mode."""
    if rule.kind != FeatureKind.METERED or rule.period is None:
        return ALL_TIME
    now = now or timezone.now()
    if rules.reset_mode == ResetMode.MANUAL:
        # No rollover: one open-ended counter, from the last operator reset (or ever).
        start = rules.counting_since or ALL_TIME.start
        return Period(name="manual", key=f"since-{start:%Y%m%d%H%M%S}", start=start, end=None)
    if rules.reset_mode == ResetMode.SCHEDULED and rules.counting_since is not None:
        # The period stays open until the reset job moves ``counting_since`` on.
        now = rules.counting_since
    return period_containing(rule.period, now, tz=conf.TIME_ZONE, anchor=rules.billing_anchor)


def _resolve(tenant: TenantRef, feature: str) -> tuple[TenantRules, FeatureRule]:
    if not isinstance(feature, str) or not feature:
        raise UnknownFeature(f"Feature must be a non-empty name, got {feature!r}.")
    rules = tenant_rules(tenant)
    return rules, rules.rule(feature)


def _counted_rule(tenant: TenantRef, feature: str) -> tuple[TenantRules, FeatureRule]:
    rules, rule = _resolve(tenant, feature)
    if rule.kind == FeatureKind.BOOLEAN:
        raise WrongFeatureKind(
            f"{feature!r} is a boolean feature: use has_feature(), it has no counter."
        )
    return rules, rule


def _decision(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    quantity: int,
    change: CounterChange,
    *,
    allowed: bool,
    reason: DenialReason | None = None,
    replayed: bool = False,
) -> Decision:
    return Decision(
        allowed=allowed,
        tenant_id=rules.tenant_id,
        plan=rules.plan_code,
        feature=rule.feature,
        kind=rule.kind,
        quantity=quantity,
        used_before=change.before,
        used=change.after,
        limit=rule.limit,
        period=period,
        reason=reason,
        replayed=replayed,
    )


# --- reading -----------------------------------------------------------------------------------


def check_limit(tenant: TenantRef, feature: str, quantity: int = 1) -> Decision:
    """Would ``quantity`` more be allowed now? Counts nothing (one read of the counter).

    Use :func:`consume` to enforce: a check followed by a separate increment can over-admit under
    concurrency.
    """
    quantity = validate_quantity(quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    used = get_store().get(CounterKey(rules.tenant_id, rule.feature, period))
    change = CounterChange(applied=False, before=used, after=used)
    if not rules.subscription_allows_use():
        return _decision(
            rules,
            rule,
            period,
            quantity,
            change,
            allowed=False,
            reason=DenialReason.SUBSCRIPTION_INACTIVE,
        )
    allowed = rule.limit is None or used + quantity <= rule.limit
    return _decision(
        rules,
        rule,
        period,
        quantity,
        change,
        allowed=allowed,
        reason=None if allowed else DenialReason.QUOTA_EXCEEDED,
    )


def has_feature(tenant: TenantRef, feature: str) -> bool:
    """Whether the tenant's plan (or an override) includes ``feature``."""
    try:
        _rules, rule = _resolve(tenant, feature)
    except FeatureNotInPlan:
        return False
    return rule.limit is None or rule.limit > 0


def get_usage(tenant: TenantRef) -> TenantUsage:
    """The tenant's plan and every feature of it, read in one query whatever their number."""
    rules = tenant_rules(tenant)
    now = timezone.now()
    order = {name: index for index, name in enumerate(conf.FEATURES)}
    ordered = sorted(
        rules.rules.values(), key=lambda r: (order.get(r.feature, len(order)), r.feature)
    )
    keys: dict[str, CounterKey] = {}
    for rule in ordered:
        if rule.kind != FeatureKind.BOOLEAN:
            keys[rule.feature] = CounterKey(
                rules.tenant_id, rule.feature, period_for(rules, rule, now)
            )
    values = get_store().get_many(keys.values())
    features = []
    for rule in ordered:
        key = keys.get(rule.feature)
        features.append(
            FeatureUsage(
                feature=rule.feature,
                label=rule.label,
                kind=rule.kind,
                used=0 if key is None else values[key],
                limit=rule.limit,
                period=None if key is None or key.period.end is None else key.period,
                included=rule.limit is None or rule.limit > 0,
                overridden=rule.overridden,
            )
        )
    return TenantUsage(
        tenant_id=rules.tenant_id,
        tenant_name=rules.tenant_name,
        plan=rules.plan_code,
        plan_name=rules.plan_name,
        subscription_status=rules.status,
        features=features,
    )


# --- counting ----------------------------------------------------------------------------------


def consume(
    tenant: TenantRef,
    feature: str,
    quantity: int = 1,
    *,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """Atomically count ``quantity`` if it fits within the limit; deny and count nothing if not.

    This is what enforcement uses: the check and the increment are one store statement.
    """
    quantity = validate_quantity(quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    if not rules.subscription_allows_use():
        used = get_store().get(CounterKey(rules.tenant_id, rule.feature, period))
        return _decision(
            rules,
            rule,
            period,
            quantity,
            CounterChange(False, used, used),
            allowed=False,
            reason=DenialReason.SUBSCRIPTION_INACTIVE,
        )
    key = CounterKey(rules.tenant_id, rule.feature, period)

    def apply() -> CounterChange:
        return get_store().consume(key, quantity, rule.limit)

    return _count(rules, rule, period, quantity, apply, idempotency_key, metadata)


def increment_usage(
    tenant: TenantRef,
    feature: str,
    quantity: int = 1,
    *,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """Record usage that already happened. It is never refused, so it may run over the limit."""
    quantity = validate_quantity(quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    key = CounterKey(rules.tenant_id, rule.feature, period)

    def apply() -> CounterChange:
        return get_store().increment(key, quantity)

    return _count(rules, rule, period, quantity, apply, idempotency_key, metadata)


def _count(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    quantity: int,
    apply: Any,
    idempotency_key: str | None,
    metadata: Mapping[str, Any] | None,
) -> Decision:
    if idempotency_key is None:
        change: CounterChange = apply()
    else:
        replay, change = _count_once(
            rules, rule, period, quantity, apply, idempotency_key, metadata
        )
        if replay is not None:
            return replay
    if change.applied:
        decision = _decision(rules, rule, period, quantity, change, allowed=True)
        _announce_thresholds(rules, rule, period, change)
    else:
        decision = _decision(
            rules,
            rule,
            period,
            quantity,
            change,
            allowed=False,
            reason=DenialReason.QUOTA_EXCEEDED,
        )
        _announce_exceeded(rules, rule, period, change.after)
    return decision


def _count_once(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    quantity: int,
    apply: Any,
    idempotency_key: str,
    metadata: Mapping[str, Any] | None,
) -> tuple[Decision | None, CounterChange]:
    """Count under an idempotency key: the event row and the counter change commit together."""
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 100:
        raise ValueError("An idempotency key is a string of 1 to 100 characters.")
    alias = conf.DATABASE_ALIAS
    with transaction.atomic(using=alias):
        try:
            with transaction.atomic(using=alias):
                event = UsageEvent.objects.using(alias).create(
                    tenant_id=rules.tenant_id,
                    feature=rule.feature,
                    quantity=quantity,
                    idempotency_key=idempotency_key,
                    timestamp=timezone.now(),
                    period_key=period.key,
                    metadata=dict(metadata or {}),
                )
        except IntegrityError:
            # Seen before (possibly a moment ago, by a request that held the key until it
            # committed): answer with the original outcome and count nothing.
            original = UsageEvent.objects.using(alias).get(
                tenant_id=rules.tenant_id, idempotency_key=idempotency_key
            )
            used = original.used_after or 0
            replay = Decision(
                allowed=original.accepted,
                tenant_id=rules.tenant_id,
                plan=rules.plan_code,
                feature=original.feature,
                kind=rule.kind,
                quantity=original.quantity,
                used_before=used - original.quantity if original.accepted else used,
                used=used,
                limit=rule.limit,
                period=period,
                reason=None if original.accepted else DenialReason.QUOTA_EXCEEDED,
                replayed=True,
            )
            return replay, CounterChange(False, used, used)
        change: CounterChange = apply()
        UsageEvent.objects.using(alias).filter(pk=event.pk).update(
            accepted=change.applied, used_after=change.after
        )
    return None, change


def refund(tenant: TenantRef, feature: str, quantity: int = 1) -> Decision:
    """Give back ``quantity`` (a failed request, a deleted project); never below zero."""
    quantity = validate_quantity(quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    change = get_store().refund(CounterKey(rules.tenant_id, rule.feature, period), quantity)
    return _decision(rules, rule, period, quantity, change, allowed=True)


def set_usage(tenant: TenantRef, feature: str, value: int) -> Decision:
    """Set a counter to ``value``: the level of an allocation (seats in use, projects)."""
    value = validate_quantity(value, allow_zero=True)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    change = get_store().set(CounterKey(rules.tenant_id, rule.feature, period), value)
    if change.after > change.before:
        _announce_thresholds(rules, rule, period, change)
    return _decision(rules, rule, period, value, change, allowed=True)


def reset_usage(
    tenant: TenantRef,
    feature: str | None = None,
    *,
    by: AbstractBaseUser | None = None,
    reason: str = "",
    source: str = UsageReset.Source.CODE,
) -> list[ResetResult]:
    """Reset the current period's counter of one feature (or of every metered feature) to zero.

    Each reset writes a :class:`~usage_limits.models.UsageReset` audit row with the value before,
    who did it and why, and sends ``usage_reset`` after commit. Warnings fire again afterwards.
    """
    rules = tenant_rules(tenant)
    if feature is None:
        targets = [r for r in rules.rules.values() if r.kind == FeatureKind.METERED]
    else:
        targets = [_counted_rule(tenant, feature)[1]]
    alias = conf.DATABASE_ALIAS
    results = []
    user = by if by is not None and getattr(by, "pk", None) is not None else None
    with transaction.atomic(using=alias):
        for rule in targets:
            period = period_for(rules, rule)
            change = get_store().reset(CounterKey(rules.tenant_id, rule.feature, period))
            audit = UsageReset.objects.using(alias).create(
                tenant_id=rules.tenant_id,
                feature=rule.feature,
                period_key=period.key,
                period_start=period.start,
                value_before=change.before,
                value_after=change.after,
                reason=reason,
                source=source,
                performed_by_id=None if user is None else user.pk,
                performed_by_name=user.get_username() if user is not None else "",
            )
            UsageAlert.objects.using(alias).filter(
                tenant_id=rules.tenant_id, feature=rule.feature, period_start=period.start
            ).delete()
            caches[conf.CACHE_ALIAS].delete(
                exceeded_cache_key(rules.tenant_id, rule.feature, period)
            )
            results.append(ResetResult(rule.feature, period, change.before, audit.pk))
            _send_after_commit(
                signals.usage_reset,
                tenant_id=rules.tenant_id,
                feature=rule.feature,
                period=period,
                value_before=change.before,
                reset=audit,
            )
    return results


# --- thresholds --------------------------------------------------------------------------------


def crossed_thresholds(before: int, after: int, limit: int | None) -> list[int]:
    """Warning percentages that a change from ``before`` to ``after`` reached (exact integers)."""
    if limit is None or limit <= 0:
        return []
    return [t for t in conf.WARNING_THRESHOLDS if before * 100 < t * limit <= after * 100]


def _announce_thresholds(
    rules: TenantRules, rule: FeatureRule, period: Period, change: CounterChange
) -> None:
    limit = rule.limit
    if limit is None:
        return
    for threshold in crossed_thresholds(change.before, change.after, limit):
        if _claim_alert(rules.tenant_id, rule.feature, period, threshold):
            _send_after_commit(
                signals.threshold_crossed,
                tenant_id=rules.tenant_id,
                feature=rule.feature,
                threshold=threshold,
                current=change.after,
                limit=limit,
                percentage=round(change.after * 100 / limit, 1) if limit else 100.0,
                period=period,
            )
    if change.before <= limit < change.after:  # overage recorded by increment_usage
        _announce_exceeded(rules, rule, period, change.after)


def _announce_exceeded(rules: TenantRules, rule: FeatureRule, period: Period, used: int) -> None:
    limit = rule.limit
    if limit is None:
        return
    # Every denial lands here; the cache spares the database an insert attempt per denied request.
    cache = caches[conf.CACHE_ALIAS]
    seen_key = exceeded_cache_key(rules.tenant_id, rule.feature, period)
    if cache.get(seen_key):
        return
    claimed = _claim_alert(rules.tenant_id, rule.feature, period, UsageAlert.EXCEEDED)
    cache.set(seen_key, True, conf.CACHE_TIMEOUT)
    if claimed:
        _send_after_commit(
            signals.quota_exceeded,
            tenant_id=rules.tenant_id,
            feature=rule.feature,
            current=used,
            limit=limit,
            percentage=round(used * 100 / limit, 1) if limit else 100.0,
            period=period,
        )


def exceeded_cache_key(tenant_id: int, feature: str, period: Period) -> str:
    return f"{CACHE_PREFIX}:exceeded:{tenant_id}:{feature}:{period.start.timestamp():.0f}"


def _claim_alert(tenant_id: int, feature: str, period: Period, level: int) -> bool:
    """Record that a level was announced; only the first caller of a period gets ``True``."""
    alias = conf.DATABASE_ALIAS
    try:
        with transaction.atomic(using=alias):
            UsageAlert.objects.using(alias).create(
                tenant_id=tenant_id, feature=feature, period_start=period.start, level=level
            )
    except IntegrityError:
        return False
    return True


def _send_after_commit(signal: Any, **kwargs: Any) -> None:
    def send() -> None:
        for receiver, response in signal.send_robust(sender=Tenant, **kwargs):
            if isinstance(response, Exception):
                logger.error(
                    "usage_limits: a %s receiver (%r) failed",
                    kwargs.get("feature"),
                    receiver,
                    exc_info=response,
                )

    transaction.on_commit(send, using=conf.DATABASE_ALIAS)


# --- request ledger ----------------------------------------------------------------------------


def annotate_usage_event(
    tenant: TenantRef,
    idempotency_key: str,
    metadata: Mapping[str, Any],
    *,
    refunded: bool = False,
) -> bool:
    """Replace the metadata of the event counted under ``idempotency_key``.

    For facts known only once the work is done (a request's duration and status). ``refunded``
    marks an event whose units were given back (``refund``) as not accepted, so that nothing bills
    it. Touches the ledger row only, never a counter; returns whether such an event exists.
    """
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    changes: dict[str, Any] = {"metadata": dict(metadata)}
    if refunded:
        changes["accepted"] = False
    updated = (
        UsageEvent.objects.using(conf.DATABASE_ALIAS)
        .filter(tenant_id=tenant_id, idempotency_key=idempotency_key)
        .update(**changes)
    )
    return updated > 0
