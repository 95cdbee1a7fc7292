"""The quota engine: every edge (decorators, middleware, API, admin, billing) goes through here.

The engine resolves a tenant's effective limit (plan, override, subscription status) from the
cached rules, picks the period, asks the store for one atomic change, and announces thresholds
after commit. It never reads a counter, compares in Python and writes it back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from enum import Enum
from typing import Any, Literal, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.utils import timezone

from usage_limits import signals
from usage_limits.backends import CounterChange, CounterKey, get_store
from usage_limits.backends.database import is_deadlock
from usage_limits.caching import cache, cache_key
from usage_limits.conf import conf
from usage_limits.events import UsageEventInput, validate_events
from usage_limits.exceptions import (
    FeatureNotInPlan,
    IdempotencyKeyReused,
    InvalidEvents,
    InvalidIdempotencyKey,
    InvalidQuantity,
    StaleRules,
    StoreUnavailable,
    UnknownEvent,
    UnknownFeature,
    WrongFeatureKind,
)
from usage_limits.ledger import (
    KnownEvent,
    LedgerRow,
    insert_events,
    known_events,
    record_outcomes,
)
from usage_limits.models import (
    FeatureKind,
    ResetMode,
    Tenant,
    UsageAlert,
    UsageEvent,
    UsageRecord,
    UsageReset,
)
from usage_limits.periods import ALL_TIME, Period, period_containing
from usage_limits.quantities import MAX_QUANTITY, validate_quantity
from usage_limits.results import (
    Decision,
    DenialReason,
    FeatureUsage,
    ResetResult,
    TenantUsage,
)
from usage_limits.rules import (
    FeatureRule,
    TenantRules,
    read_rules,
    rules_to_enforce,
    tenant_rules,
)

logger = logging.getLogger("usage_limits")

TenantRef = Tenant | int

__all__ = [
    "check_limit",
    "consume",
    "get_usage",
    "has_feature",
    "increment_usage",
    "invalid_events",
    "record_events",
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
    return _period_containing(rule.period, now, conf.TIME_ZONE, rules.billing_anchor)


# The last period computed per (name, time zone, anchor): almost every call falls in it, and
# reusing it spares the time-zone arithmetic on the enforcement path.
_recent_periods: dict[tuple[str, str, datetime | None], Period] = {}


def _period_containing(name: str, now: datetime, tz: str, anchor: datetime) -> Period:
    memo_key = (name, tz, anchor if name == "billing_monthly" else None)
    period = _recent_periods.get(memo_key)
    if period is not None and period.contains(now):
        return period
    period = period_containing(name, now, tz=tz, anchor=anchor)
    if len(_recent_periods) > 10_000:
        _recent_periods.clear()
    _recent_periods[memo_key] = period
    return period


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
    idempotency_key: str | None = None,
    counted_at: datetime | None = None,
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
        idempotency_key=idempotency_key,
        counted_at=counted_at,
    )


class _OutsideChanges:
    """Counter changes a database rollback does not undo (the Redis store's), noted while a unit
    of work runs in a transaction, and taken back if that unit of work fails.

    Without this, a ledger write that fails after Redis counted (a dropped connection, a key
    race that makes a batch run again) would leave the units counted, and the caller's retry
    with the same idempotency key would count them a second time.
    """

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made: list[tuple[CounterKey, CounterChange]] = []

    def note(self, key: CounterKey, change: CounterChange) -> CounterChange:
        if change.applied and change.outside_transaction:
            self.made.append((key, change))
        return change

    def undo(self) -> None:
        if self.made:
            store = get_store()
            for key, change in reversed(self.made):
                store.undo(key, change)
            self.made.clear()

    # Entered before the transaction (``with _OutsideChanges() as outside, atomic():``), so it
    # exits after it: the database has rolled back when what it cannot undo is taken back.
    def __enter__(self) -> _OutsideChanges:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.undo()


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

    This is what enforcement uses: the check and the increment are one store statement, which
    also refuses rules that changed since this process read them (they are then read again).
    """
    quantity = validate_quantity(quantity)

    def count(rules: TenantRules) -> Decision:
        rule = _counted_rule_of(rules, feature)
        period = period_for(rules, rule)
        if not rules.subscription_allows_use():
            _confirm_current(rules)  # a refusal read from memory must be the database's too
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
            return get_store().consume(key, quantity, rule.limit, rules_version=rules.version)

        return _count(rules, rule, period, quantity, apply, idempotency_key, metadata)

    return _with_current_rules(tenant, count)


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

    def count(rules: TenantRules) -> Decision:
        rule = _counted_rule_of(rules, feature)
        period = period_for(rules, rule)
        key = CounterKey(rules.tenant_id, rule.feature, period)

        def apply() -> CounterChange:
            return get_store().increment(key, quantity, rules_version=rules.version)

        return _count(rules, rule, period, quantity, apply, idempotency_key, metadata)

    return _with_current_rules(tenant, count)


# An engine transaction chosen as a deadlock's victim runs this often.
_DEADLOCK_ATTEMPTS = 3

T = TypeVar("T")


def _again_on_deadlock(run: Callable[[], T]) -> T:
    """Run one of the engine's transactions again when the database chose it as a deadlock's
    victim: it was rolled back whole (and what it counted outside the transaction taken back),
    so nothing of it is kept. Inside the caller's transaction the error goes up: all of that
    transaction was rolled back, which only the caller can run again."""
    for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
        try:
            return run()
        except (OperationalError, StoreUnavailable) as exc:
            last = attempt == _DEADLOCK_ATTEMPTS
            if last or not is_deadlock(exc) or connections[conf.DATABASE_ALIAS].in_atomic_block:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# A count refused for stale rules (StaleRules) is run again with rules read anew at most this
# often; only rules that change under every attempt make it give up.
_RULES_ATTEMPTS = 3


def _with_current_rules(tenant: TenantRef, count: Callable[[TenantRules], Decision]) -> Decision:
    """Run ``count`` with the rules this process remembers for the tenant; when the store (or
    :func:`_confirm_current`) finds they changed, nothing was counted: read them and run again."""
    rules = rules_to_enforce(tenant)
    for _attempt in range(_RULES_ATTEMPTS - 1):
        try:
            return count(rules)
        except StaleRules:
            rules = read_rules(rules.tenant_id)
    return count(rules)


def _counted_rule_of(rules: TenantRules, feature: str) -> FeatureRule:
    """The rule of a counted feature in rules read from memory: an error that only remembered
    rules would give (a feature added to the plan since) is checked against the database."""
    if not isinstance(feature, str) or not feature:
        raise UnknownFeature(f"Feature must be a non-empty name, got {feature!r}.")
    try:
        rule = rules.rule(feature)
        if rule.kind == FeatureKind.BOOLEAN:
            raise WrongFeatureKind(
                f"{feature!r} is a boolean feature: use has_feature(), it has no counter."
            )
    except (UnknownFeature, FeatureNotInPlan, WrongFeatureKind):
        _confirm_current(rules)
        raise
    return rule


def _confirm_current(rules: TenantRules) -> None:
    """:class:`StaleRules` unless ``rules`` still have the tenant's version (one query)."""
    current = tenant_rules(rules.tenant_id)
    if current.version != rules.version:
        raise StaleRules(f"The rules of tenant {rules.tenant_id} changed.")


def _count(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    quantity: int,
    apply: Any,
    idempotency_key: str | None,
    metadata: Mapping[str, Any] | None,
) -> Decision:
    # A feature with a Stripe meter writes a ledger row with the counter; every other feature
    # without an idempotency key stays one store statement.
    billable = conf.stripe_meter(rule.feature) is not None
    counted_at = timezone.now()
    if idempotency_key is None and not billable:
        change: CounterChange = apply()
    elif idempotency_key is None:
        change, idempotency_key = _again_on_deadlock(
            lambda: _count_billable(rules, rule, period, quantity, apply, metadata)
        )
    else:
        key = idempotency_key
        replay, change = _again_on_deadlock(
            lambda: _count_once(
                rules, rule, period, quantity, apply, key, metadata, billable=billable
            )
        )
        if replay is not None:
            return replay
    if change.applied:
        decision = _decision(
            rules,
            rule,
            period,
            quantity,
            change,
            allowed=True,
            idempotency_key=idempotency_key,
            counted_at=counted_at,
        )
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
            idempotency_key=idempotency_key,
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
    *,
    billable: bool = False,
) -> tuple[Decision | None, CounterChange]:
    """Count under an idempotency key: the event row and the counter change commit together.

    ``billable`` events (the feature has a Stripe meter) that were counted wait in the ledger as
    pending until the reporter sends them.
    """
    _check_key(idempotency_key)
    alias = conf.DATABASE_ALIAS
    key = CounterKey(rules.tenant_id, rule.feature, period)
    # If anything fails, the event row is gone: so must be what was counted with it.
    with _OutsideChanges() as outside, transaction.atomic(using=alias):
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
            difference = _reuse(original, rule.feature, quantity)
            if difference:
                raise IdempotencyKeyReused({0: difference}) from None
            replay = _replayed(rules, rule, period, original, idempotency_key)
            return replay, CounterChange(False, replay.used, replay.used)
        change: CounterChange = outside.note(key, apply())
        UsageEvent.objects.using(alias).filter(pk=event.pk).update(
            accepted=change.applied,
            used_after=change.after,
            report_state=UsageEvent.ReportState.PENDING
            if billable and change.applied
            else UsageEvent.ReportState.NOT_REPORTED,
        )
    return None, change


def _check_key(idempotency_key: object) -> None:
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 100:
        raise InvalidIdempotencyKey(
            f"An idempotency key is a string of 1 to 100 characters, got {idempotency_key!r:.120}."
        )


def _count_billable(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    quantity: int,
    apply: Any,
    metadata: Mapping[str, Any] | None,
) -> tuple[CounterChange, str | None]:
    """Count a metered feature without a caller's key: the ledger row commits with the counter.

    The row gets a generated key (Stripe needs one identifier per event), returned with the
    change (``None`` for a denial, which counts nothing and so writes no row).
    """
    alias = conf.DATABASE_ALIAS
    key: str | None = None
    # If anything fails, there is no ledger row, so nothing billed: nothing counted either.
    with _OutsideChanges() as outside, transaction.atomic(using=alias):
        change: CounterChange = outside.note(
            CounterKey(rules.tenant_id, rule.feature, period), apply()
        )
        if change.applied:
            key = uuid.uuid4().hex
            UsageEvent.objects.using(alias).create(
                tenant_id=rules.tenant_id,
                feature=rule.feature,
                quantity=quantity,
                idempotency_key=key,
                timestamp=timezone.now(),
                period_key=period.key,
                accepted=True,
                used_after=change.after,
                metadata=dict(metadata or {}),
                report_state=UsageEvent.ReportState.PENDING,
            )
    return change, key


def _reuse(original: UsageEvent | KnownEvent, feature: str, quantity: int) -> str:
    """What differs between a key's first event and a new one under it ("" for a true retry)."""
    if original.feature != feature:
        return (
            f"The idempotency key was used for {original.feature!r}, not {feature!r}; "
            "use a new key for a new event."
        )
    if original.quantity != quantity:
        return (
            f"The idempotency key was used with quantity {original.quantity}, not {quantity}; "
            "use a new key for a new event."
        )
    return ""


def _replayed(
    rules: TenantRules,
    rule: FeatureRule,
    period: Period,
    original: UsageEvent | KnownEvent,
    key: str,
) -> Decision:
    """The outcome an idempotency key got the first time, as a decision that counted nothing."""
    used = original.used_after or 0
    return Decision(
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
        idempotency_key=key,
    )


# --- batches -----------------------------------------------------------------------------------

# A batch that lost a race for an idempotency key to a concurrent request is retried (it then
# sees the winner's committed event as a replay) this many times before each event goes alone.
_BATCH_ATTEMPTS = 5


def record_events(
    tenant: TenantRef, events: Sequence[UsageEventInput], *, now: datetime | None = None
) -> list[Decision]:
    """Record a batch of usage events: one decision per event, in the batch's order.

    The whole batch is validated first (:class:`~usage_limits.exceptions.InvalidEvents` says what
    is wrong with which event, and nothing is counted). Then, in one transaction: one query finds
    the idempotency keys seen before (those events are answered with their original outcome and
    counted nothing), one store statement per feature adds the batch's total (``enforce`` events:
    a guarded add of the total, or one guarded add per event when the total does not fit), and one
    multi-row insert writes the events to the ledger with their outcomes. A repeated key within the
    batch counts once. If a concurrent request commits one of the batch's keys first, the insert
    fails, the transaction rolls back and the batch runs again, now seeing that key as a replay.
    """
    rules = tenant_rules(tenant)
    now = now or timezone.now()
    events = list(events)
    periods = _counted_periods(rules, now)
    errors = validate_events(
        rules, events, now=now, period_start={f: p.start for f, p in periods.items()}
    )
    if errors:
        raise InvalidEvents(errors)
    if not events:
        return []
    _refuse_reused_keys_within(events)
    alias = conf.DATABASE_ALIAS
    for _attempt in range(_BATCH_ATTEMPTS):
        try:
            # A failed attempt takes back what the database's rollback cannot (see
            # _OutsideChanges) before it is run again or the error goes up.
            with _OutsideChanges() as outside, transaction.atomic(using=alias):
                return _record_batch(rules, events, periods, now, outside)
        except IntegrityError:
            # A concurrent batch committed one of the keys first: run again, seeing it replayed.
            continue
        except StaleRules:
            # The tenant's rules changed since they were read (nothing was kept): the batch is
            # checked and counted again under the new ones.
            rules = read_rules(rules.tenant_id)
            periods = _counted_periods(rules, now)
            errors = validate_events(
                rules, events, now=now, period_start={f: p.start for f, p in periods.items()}
            )
            if errors:
                raise InvalidEvents(errors) from None
            continue
        except (OperationalError, StoreUnavailable) as exc:
            # InnoDB may pick a batch as the victim of a lock cycle on a key's index entry (the
            # first use of a period, duplicate-key checks); the whole transaction was rolled
            # back, so running it again is safe. (The store reports it as StoreUnavailable.)
            if not is_deadlock(exc):
                raise
    logger.warning("usage_limits: a batch of %d events kept losing key races", len(events))
    return [_record_alone(rules.tenant_id, event) for event in events]


def _refuse_reused_keys_within(events: list[UsageEventInput]) -> None:
    first: dict[str, UsageEventInput] = {}
    reused: dict[int, str] = {}
    for index, event in enumerate(events):
        key = event.idempotency_key
        if key is None:
            continue
        earlier = first.setdefault(key, event)
        if earlier is not event:
            known = KnownEvent(earlier.feature, earlier.quantity, True, None)
            difference = _reuse(known, event.feature, event.quantity)
            if difference:
                reused[index] = difference
    if reused:
        raise IdempotencyKeyReused(reused)


def invalid_events(
    tenant: TenantRef, events: Sequence[UsageEventInput], *, now: datetime | None = None
) -> dict[int, dict[str, str]]:
    """What :func:`record_events` would refuse, by index (empty: nothing). Counts nothing."""
    rules = tenant_rules(tenant)
    now = now or timezone.now()
    periods = _counted_periods(rules, now)
    return validate_events(
        rules, list(events), now=now, period_start={f: p.start for f, p in periods.items()}
    )


def _counted_periods(rules: TenantRules, now: datetime) -> dict[str, Period]:
    return {
        rule.feature: period_for(rules, rule, now)
        for rule in rules.rules.values()
        if rule.kind != FeatureKind.BOOLEAN
    }


def _record_batch(
    rules: TenantRules,
    events: list[UsageEventInput],
    periods: Mapping[str, Period],
    now: datetime,
    outside: _OutsideChanges,
) -> list[Decision]:
    alias = conf.DATABASE_ALIAS
    keys = {e.idempotency_key for e in events if e.idempotency_key is not None}
    originals = known_events(alias, rules.tenant_id, keys)
    results: list[Decision | None] = [None] * len(events)
    first_with_key: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    to_count: dict[str, list[int]] = {}
    allows_use = rules.subscription_allows_use(now)
    reused: dict[int, str] = {}
    for index, event in enumerate(events):
        rule = rules.rules[event.feature]
        key = event.idempotency_key
        if key is not None:
            original = originals.get(key)
            if original is not None:
                difference = _reuse(original, event.feature, event.quantity)
                if difference:
                    reused[index] = difference
                results[index] = _replayed(rules, rule, periods[rule.feature], original, key)
                continue
            if key in first_with_key:
                repeats.append((index, first_with_key[key]))
                continue
            first_with_key[key] = index
        if event.enforce and not allows_use:
            # As consume(): refused before counting, so nothing goes into the ledger either.
            period = periods[rule.feature]
            results[index] = _decision(
                rules,
                rule,
                period,
                event.quantity,
                CounterChange(False, 0, 0),
                allowed=False,
                reason=DenialReason.SUBSCRIPTION_INACTIVE,
            )
            continue
        to_count.setdefault(rule.feature, []).append(index)
    if reused:
        raise IdempotencyKeyReused(reused)  # before anything is counted

    # A store that counts outside this transaction (Redis) has the batch claim its keys before
    # anything is counted: a concurrent batch (or event) with one of them waits on its index
    # entry until this transaction ends, then sees it as a replay. Counting first let a denial
    # that a since-undone count caused win the key. In the database the counter's row lock
    # orders concurrent batches already, and claiming first would take the event index's locks
    # before the counter's (MariaDB deadlocked on that order). Key order: two batches sharing
    # keys wait for each other instead of deadlocking.
    claim_first = not get_store().counts_in_transaction
    if claim_first:
        claims = [
            _ledger_row(rules, events[i], periods[feature], now, CounterChange(False, 0, 0))
            for feature, indices in to_count.items()
            for i in indices
            if events[i].idempotency_key is not None
        ]
        insert_events(alias, sorted(claims, key=lambda row: str(row.idempotency_key)))
    ledger: list[LedgerRow] = []
    # Sorted, so that two batches touching the same counters lock them in the same order.
    for feature in sorted(to_count):
        rule = rules.rules[feature]
        period = periods[feature]
        indices = to_count[feature]
        group = [events[i] for i in indices]
        changes = _count_group(
            CounterKey(rules.tenant_id, feature, period), rule, group, outside, rules.version
        )
        for index, event, change in zip(indices, group, changes, strict=True):
            results[index] = _decision(
                rules,
                rule,
                period,
                event.quantity,
                change,
                allowed=change.applied,
                reason=None if change.applied else DenialReason.QUOTA_EXCEEDED,
                idempotency_key=event.idempotency_key,
            )
            ledger.append(_ledger_row(rules, event, period, now, change))
        applied = [c for c in changes if c.applied]
        if applied:
            _announce_thresholds(
                rules, rule, period, CounterChange(True, applied[0].before, applied[-1].after)
            )
        if len(applied) < len(changes):
            _announce_exceeded(rules, rule, period, changes[-1].after)
    if claim_first:
        record_outcomes(alias, rules.tenant_id, [r for r in ledger if r.idempotency_key])
        insert_events(alias, [r for r in ledger if r.idempotency_key is None])
    else:
        ledger.sort(key=lambda row: (row.idempotency_key is None, row.idempotency_key or ""))
        insert_events(alias, ledger)
    for index, first in repeats:
        results[index] = replace(_settled(results[first]), replayed=True)
    return [_settled(result) for result in results]


def _ledger_row(
    rules: TenantRules, event: UsageEventInput, period: Period, now: datetime, change: CounterChange
) -> LedgerRow:
    """The ledger row of a batch's event (with ``change``'s outcome)."""
    billable = conf.stripe_meter(event.feature) is not None
    return LedgerRow(
        tenant_id=rules.tenant_id,
        feature=event.feature,
        quantity=event.quantity,
        idempotency_key=event.idempotency_key,
        timestamp=event.timestamp or now,
        period_key=period.key,
        accepted=change.applied,
        used_after=change.after,
        metadata=dict(event.metadata or {}),
        report_state=UsageEvent.ReportState.PENDING
        if change.applied and billable
        else UsageEvent.ReportState.NOT_REPORTED,
    )


def _count_group(
    key: CounterKey,
    rule: FeatureRule,
    events: list[UsageEventInput],
    outside: _OutsideChanges,
    version: int,
) -> list[CounterChange]:
    """Count one feature's events of a batch: one store statement when they all fit."""
    store = get_store()
    quantities = [e.quantity for e in events]
    total = sum(quantities)
    if total <= MAX_QUANTITY:
        if rule.limit is None or not any(e.enforce for e in events):
            change = store.increment(key, total, rules_version=version)
            return _split(outside.note(key, change), quantities)
        if all(e.enforce for e in events):
            change = outside.note(key, store.consume(key, total, rule.limit, rules_version=version))
            if change.applied:
                return _split(change, quantities)
    # Some do not fit (or enforced and recorded events are mixed): each in turn, in batch order,
    # so the ones that fit are counted and the rest are denied exactly as consume() would.
    return [
        outside.note(
            key,
            store.consume(key, e.quantity, rule.limit, rules_version=version)
            if e.enforce
            else store.increment(key, e.quantity, rules_version=version),
        )
        for e in events
    ]


def _split(change: CounterChange, quantities: list[int]) -> list[CounterChange]:
    """One statement added the batch's total: give each event its own slice of it, in order."""
    changes = []
    before = change.before
    for quantity in quantities:
        changes.append(CounterChange(True, before, before + quantity))
        before += quantity
    return changes


def _settled(result: Decision | None) -> Decision:
    if result is None:  # pragma: no cover - every index is filled above
        raise RuntimeError("an event of the batch was left without an outcome")
    return result


def _record_alone(tenant_id: int, event: UsageEventInput) -> Decision:
    count = consume if event.enforce else increment_usage
    return count(
        tenant_id,
        event.feature,
        event.quantity,
        idempotency_key=event.idempotency_key,
        metadata=event.metadata,
    )


class _Unset(Enum):
    """The default of an argument whose absence means something of its own."""

    UNSET = "unset"


def refund(
    tenant: TenantRef,
    feature: str,
    quantity: int | Literal[_Unset.UNSET] = _Unset.UNSET,
    *,
    idempotency_key: str | None = None,
) -> Decision:
    """Give back units (a failed request, a deleted project); never below zero.

    Without a key, ``quantity`` (default 1) comes off the counter. With ``idempotency_key``, the
    units counted under that key come back, once however often this is called: the event is
    marked as not accepted and, if it has not gone to Stripe yet, it never will (see
    :func:`withdraw_event`). ``quantity`` may then be left out; given, it must be the event's.
    """
    if idempotency_key is not None:
        key = idempotency_key
        return _again_on_deadlock(lambda: _refund_event(tenant, feature, quantity, key))
    quantity = validate_quantity(1 if quantity is _Unset.UNSET else quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    change = get_store().refund(CounterKey(rules.tenant_id, rule.feature, period), quantity)
    return _decision(rules, rule, period, quantity, change, allowed=True)


def _refund_event(
    tenant: TenantRef, feature: str, quantity: int | Literal[_Unset.UNSET], idempotency_key: str
) -> Decision:
    _check_key(idempotency_key)
    expected = None if quantity is _Unset.UNSET else validate_quantity(quantity)
    rules, rule = _counted_rule(tenant, feature)
    period = period_for(rules, rule)
    key = CounterKey(rules.tenant_id, rule.feature, period)
    alias = conf.DATABASE_ALIAS
    events = UsageEvent.objects.using(alias).filter(
        tenant_id=rules.tenant_id, idempotency_key=idempotency_key
    )
    # The event's row decides, under its lock, whether this call is the one that gives back: a
    # second refund with the key finds it withdrawn already and changes nothing.
    with _OutsideChanges() as outside, transaction.atomic(using=alias):
        withdrawn = withdraw_event(events.filter(feature=rule.feature))
        event = events.first()
        if event is None or event.feature != rule.feature:
            raise UnknownEvent(
                f"No {rule.feature!r} usage was counted under the key {idempotency_key!r} "
                f"for tenant {rules.tenant_id}."
            )
        if expected is not None and expected != event.quantity:
            raise InvalidQuantity(
                f"The key {idempotency_key!r} counted {event.quantity} unit(s), not {expected}: "
                "a refund by key gives back what was counted under it."
            )
        # The count the units were taken from: the event's period, unless it was reset since
        # (the reset took them back already). Never this period's count for an earlier one's.
        counted_in = period_for(rules, rule, event.timestamp)
        if (
            withdrawn
            and counted_in.key == event.period_key
            and not _reset_since(rules.tenant_id, rule.feature, counted_in, event.timestamp)
        ):
            counted_key = CounterKey(rules.tenant_id, rule.feature, counted_in)
            change = outside.note(counted_key, get_store().refund(counted_key, event.quantity))
            period = counted_in  # the decision speaks of the count given back to
        else:
            # Refunded before, never accepted, or counted in a count that was reset since:
            # nothing comes off a counter.
            used = get_store().get(key)
            change = CounterChange(False, used, used)
    if withdrawn and event.report_state in _REPORTED_OR_REPORTING:
        logger.warning(
            "usage_limits: %s unit(s) of %s refunded for tenant %s under the key %r were already "
            "being reported to Stripe (meter event %s); cancel that meter event with a meter "
            "event adjustment if it must not be billed.",
            event.quantity,
            rule.feature,
            rules.tenant_id,
            idempotency_key,
            event.report_identifier or "not yet identified",
        )
    return _decision(
        rules,
        rule,
        period,
        event.quantity,
        change,
        allowed=True,
        replayed=not withdrawn,
        idempotency_key=idempotency_key,
    )


# Report states of an event that Stripe may have (a withdrawn event still pending is one that a
# reporter holds or has tried: see withdraw_event).
_REPORTED_OR_REPORTING = (UsageEvent.ReportState.PENDING, UsageEvent.ReportState.SENT)


def give_back(decision: Decision) -> Decision:
    """Give back what an allowed ``decision`` counted (``count="success"`` and a failed view),
    to the count it was taken from.

    By its ledger key when it has one (the units leave the Stripe report too); otherwise from
    the counter of the decision's period, not the current one. A counter reset since the count
    gives nothing back: the reset took those units already, and taking them from the new count
    would admit one more than the limit there.
    """
    if decision.idempotency_key is not None:
        return refund(
            decision.tenant_id,
            decision.feature,
            decision.quantity,
            idempotency_key=decision.idempotency_key,
        )
    rules, rule = _counted_rule(decision.tenant_id, decision.feature)
    key = CounterKey(rules.tenant_id, rule.feature, decision.period)
    alias = conf.DATABASE_ALIAS
    # The row stays locked from the check to the change: a reset (which locks it too) comes
    # wholly before or after.
    with _OutsideChanges() as outside, transaction.atomic(using=alias):
        list(_locked_counter(alias, key))
        since = decision.counted_at
        if since is not None and _reset_since(rules.tenant_id, rule.feature, key.period, since):
            used = get_store().get(key)
            change = CounterChange(False, used, used)
        else:
            change = outside.note(key, get_store().refund(key, decision.quantity))
    return _decision(rules, rule, decision.period, decision.quantity, change, allowed=True)


def _locked_counter(alias: str, key: CounterKey) -> QuerySet[UsageRecord, int]:
    return (
        UsageRecord.objects.using(alias)
        .select_for_update()
        .filter(tenant_id=key.tenant_id, feature=key.feature, period_start=key.period.start)
        .values_list("pk", flat=True)
    )


def _reset_since(tenant_id: int, feature: str, period: Period, since: datetime) -> bool:
    """Whether the counter of ``period`` was reset at ``since`` or later (its audit says so)."""
    return (
        UsageReset.objects.using(conf.DATABASE_ALIAS)
        .filter(
            tenant_id=tenant_id, feature=feature, period_start=period.start, created_at__gte=since
        )
        .exists()
    )


def withdraw_event(events: QuerySet[UsageEvent]) -> int:
    """Mark the accepted events among ``events`` as given back; returns how many there were.

    An event withdrawn before any reporter took it (pending, unclaimed, no Stripe identifier
    yet) is never reported. One a reporter holds, or tried before, may be in Stripe already:
    its report goes on, and only a meter event adjustment takes it back (docs/billing.md).
    One guarded ``UPDATE``: of two calls for the same event, one finds it accepted.
    """
    pending = UsageEvent.ReportState.PENDING
    return events.filter(accepted=True).update(
        accepted=False,
        report_state=Case(
            When(
                report_state=pending,
                claimed_by="",
                report_identifier="",
                then=Value(UsageEvent.ReportState.NOT_REPORTED),
            ),
            default=F("report_state"),
        ),
    )


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
            cache().delete(exceeded_cache_key(rules.tenant_id, rule.feature, period))
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
    seen_key = exceeded_cache_key(rules.tenant_id, rule.feature, period)
    if cache().get(seen_key):
        return
    claimed = _claim_alert(rules.tenant_id, rule.feature, period, UsageAlert.EXCEEDED)
    cache().set(seen_key, True, conf.CACHE_TIMEOUT)
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
    return cache_key("exceeded", tenant_id, feature, f"{period.start.timestamp():.0f}")


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
    tenant: TenantRef, idempotency_key: str, metadata: Mapping[str, Any]
) -> bool:
    """Replace the metadata of the event counted under ``idempotency_key``.

    For facts known only once the work is done (a request's duration and status). Touches the
    ledger row only, never a counter (a refund by key withdraws the event: see :func:`refund`);
    returns whether such an event exists.
    """
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    return (
        UsageEvent.objects.using(conf.DATABASE_ALIAS)
        .filter(tenant_id=tenant_id, idempotency_key=idempotency_key)
        .update(metadata=dict(metadata))
        > 0
    )
