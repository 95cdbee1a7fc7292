"""What a tenant may use: its plan's limits with per-tenant overrides applied.

Rules are read from the database and remembered in this process's memory, each with the tenant's
``rules_version``. Every change to what a tenant may use (its plan or the plan's limits, its
status, period or overrides) moves that version in the change's own transaction
(:func:`bump_rules_version`, called by :mod:`usage_limits.invalidation`). Nothing is trusted
without a check against the database, and the check costs no round trip of its own where it
matters:

* counting (:func:`rules_to_enforce`): the store's one statement (or script) counts only while the
  row's version is still the one the rules were read with, and otherwise raises
  :class:`~usage_limits.exceptions.StaleRules`, counting nothing; the engine reads the rules again
  and retries;
* everything else (:func:`tenant_rules`: ``has_feature``, ``check_limit``, ``get_usage``, a 402)
  reads the version in one small query before using what it remembers.

So no cache, shared or per process, can make a process enforce a plan, a limit, an override or a
status that the database no longer holds, and nothing is shared between two databases. See
docs/architecture.md, "Rules and their versions".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.db import connections, router
from django.db.models import QuerySet
from django.utils import timezone

from usage_limits.conf import conf
from usage_limits.exceptions import FeatureNotInPlan, UnknownFeature, UnknownTenant
from usage_limits.models import (
    UNLIMITED,
    FeatureKind,
    Plan,
    PlanLimit,
    ResetMode,
    SubscriptionStatus,
    Tenant,
    TenantLimitOverride,
)


@dataclass(frozen=True, slots=True)
class FeatureRule:
    """The effective limit of one feature for one tenant."""

    feature: str
    kind: str
    limit: int | None  # None: unlimited
    period: str | None  # metered features only
    label: str
    overridden: bool = False

    @property
    def unlimited(self) -> bool:
        return self.limit is None


@dataclass(frozen=True, slots=True)
class PlanRules:
    plan_id: int
    code: str
    name: str
    rules: dict[str, FeatureRule]
    version: int = 0  # the plan row's rules_version


@dataclass(frozen=True, slots=True)
class TenantRules:
    """Everything the engine needs to decide, without touching the database."""

    tenant_id: int
    tenant_name: str
    plan_id: int
    plan_code: str
    plan_name: str
    status: str
    past_due_since: datetime | None
    billing_anchor: datetime
    reset_mode: str
    counting_since: datetime | None
    rules: dict[str, FeatureRule] = field(default_factory=dict)
    version: int = 0  # the tenant row's rules_version these rules were read with

    def rule(self, feature: str) -> FeatureRule:
        try:
            return self.rules[feature]
        except KeyError:
            if feature in known_features():
                raise FeatureNotInPlan(
                    f"Plan {self.plan_code!r} does not include the feature {feature!r}."
                ) from None
            raise UnknownFeature(f"Unknown feature {feature!r}.") from None

    def subscription_allows_use(self, now: datetime | None = None) -> bool:
        if self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING):
            return True
        if self.status == SubscriptionStatus.PAST_DUE:
            since = self.past_due_since or (now or timezone.now())
            grace_end = since + timedelta(days=conf.PAST_DUE_GRACE_DAYS)
            return (now or timezone.now()) < grace_end
        return False


# Rules read by this process: (database, tenant id) -> rules. Bounded; cleared when full.
_REMEMBERED: dict[tuple[str, int], TenantRules] = {}
_REMEMBERED_MAX = 10_000
_remembered_lock = threading.Lock()
# Plans' limits: (database, plan id) -> rules, replaced when the plan's rules_version moves.
_PLANS: dict[tuple[str, int], PlanRules] = {}


def _database() -> str:
    """The database tenants are read from, as a key: two databases never share an entry."""
    alias = router.db_for_read(Tenant)
    return f"{alias}:{connections[alias].settings_dict.get('NAME')}"


def normalise_limit(limit: int | None) -> int | None:
    return None if limit is None or limit == UNLIMITED else int(limit)


def feature_label(feature: str) -> str:
    declared = conf.FEATURES.get(feature, {})
    return str(declared.get("label") or feature.replace("_", " ").capitalize())


def feature_period(feature: str, period: str) -> str:
    declared = conf.FEATURES.get(feature, {})
    return period or str(declared.get("period") or conf.DEFAULT_PERIOD)


def plan_rules(plan: Plan) -> PlanRules:
    """The limits of a plan row: read once per version of the plan and process."""
    key = (_database(), int(plan.pk))
    remembered = _PLANS.get(key)
    if remembered is not None and remembered.version == plan.rules_version:
        return remembered
    rules = {}
    for limit in PlanLimit.objects.filter(plan_id=plan.pk):
        rules[limit.feature] = FeatureRule(
            feature=limit.feature,
            kind=limit.kind,
            limit=normalise_limit(limit.limit),
            period=feature_period(limit.feature, limit.period)
            if limit.kind == FeatureKind.METERED
            else None,
            label=feature_label(limit.feature),
        )
    result = PlanRules(
        plan_id=plan.pk, code=plan.code, name=plan.name, rules=rules, version=plan.rules_version
    )
    with _remembered_lock:
        if len(_PLANS) >= _REMEMBERED_MAX:
            _PLANS.clear()
        _PLANS[key] = result
    return result


def _load_tenant_part(tenant_id: int) -> dict[str, object]:
    try:
        tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    except (Tenant.DoesNotExist, ValueError, TypeError):
        raise UnknownTenant(f"No tenant with id {tenant_id!r}.") from None
    overrides = {
        o.feature: o.limit for o in TenantLimitOverride.objects.filter(tenant_id=tenant_id)
    }
    return _tenant_part(tenant, overrides)


def _tenant_part(tenant: Tenant, overrides: Mapping[str, int | None]) -> dict[str, object]:
    return {
        "name": tenant.name,
        "plan": tenant.plan,
        "status": tenant.subscription_status,
        "past_due_since": tenant.past_due_since,
        "billing_anchor": tenant.billing_anchor or tenant.created_at,
        "reset_mode": tenant.reset_mode,
        "reset_period": tenant.reset_period,
        "counting_since": tenant.counting_since,
        "overrides": {feature: normalise_limit(limit) for feature, limit in overrides.items()},
        "version": tenant.rules_version,
    }


def rules_to_enforce(tenant: Tenant | int) -> TenantRules:
    """The rules this process remembers for a tenant, unchecked: for a count, whose statement
    compares their version with the row's (see the module's docstring). Read on first use."""
    tenant_id = _tenant_id(tenant)
    remembered = _REMEMBERED.get((_database(), tenant_id))
    if remembered is not None:
        return remembered
    return read_rules(tenant_id)


def tenant_rules(tenant: Tenant | int) -> TenantRules:
    """The rules of a tenant (an instance or a primary key), checked against the database.

    One query when this process remembers them and they are current; they are read again when
    the tenant's ``rules_version`` moved.
    """
    tenant_id = _tenant_id(tenant)
    remembered = _REMEMBERED.get((_database(), tenant_id))
    if remembered is not None:
        current = Tenant.objects.filter(pk=tenant_id).values_list("rules_version", flat=True)
        if list(current) == [remembered.version]:
            return remembered
    return read_rules(tenant_id)


def read_rules(tenant_id: int) -> TenantRules:
    """Read a tenant's rules from the database and remember them in this process."""
    rules = _compose(tenant_id, _load_tenant_part(tenant_id))
    database = _database()
    with _remembered_lock:
        if len(_REMEMBERED) >= _REMEMBERED_MAX:
            _REMEMBERED.clear()
        _REMEMBERED[database, tenant_id] = rules
    return rules


def forget_rules(tenant_id: int) -> None:
    """Drop what this process remembers of a tenant (its rules turned out to be stale)."""
    _REMEMBERED.pop((_database(), tenant_id), None)


def rules_for_row(tenant: Tenant, overrides: Mapping[str, int | None]) -> TenantRules:
    """The rules of a tenant row already loaded, with its overrides (feature -> stored limit).

    For batch jobs that read many tenants in a few queries: no cache is read or written, and the
    row's own values win over whatever the cache holds.
    """
    return _compose(int(tenant.pk), _tenant_part(tenant, overrides))


def _compose(tenant_id: int, part: dict[str, object]) -> TenantRules:
    plan = plan_rules(part["plan"])  # type: ignore[arg-type]
    rules = dict(plan.rules)
    overrides: dict[str, int | None] = part["overrides"]  # type: ignore[assignment]
    for feature, limit in overrides.items():
        base = rules.get(feature)
        if base is None:
            declared = conf.FEATURES.get(feature, {})
            kind = str(declared.get("kind", FeatureKind.METERED))
            base = FeatureRule(
                feature=feature,
                kind=kind,
                limit=limit,
                period=feature_period(feature, "") if kind == FeatureKind.METERED else None,
                label=feature_label(feature),
            )
        rules[feature] = FeatureRule(
            feature=feature,
            kind=base.kind,
            limit=limit,
            period=base.period,
            label=base.label,
            overridden=True,
        )
    reset_period = str(part.get("reset_period") or "")
    if reset_period:
        # A per-tenant period (e.g. set through the API's PATCH /usage/limits/) replaces the
        # plan's for every metered feature of the tenant.
        for feature, rule in rules.items():
            if rule.kind == FeatureKind.METERED:
                rules[feature] = replace(rule, period=reset_period)
    return TenantRules(
        tenant_id=tenant_id,
        tenant_name=str(part["name"]),
        plan_id=plan.plan_id,
        plan_code=plan.code,
        plan_name=plan.name,
        status=str(part["status"]),
        past_due_since=part["past_due_since"],  # type: ignore[arg-type]
        billing_anchor=part["billing_anchor"],  # type: ignore[arg-type]
        reset_mode=str(part["reset_mode"] or conf.RESET_MODE or ResetMode.LAZY),
        counting_since=part["counting_since"],  # type: ignore[arg-type]
        rules=rules,
        version=int(part.get("version") or 0),  # type: ignore[call-overload]
    )


def known_features() -> frozenset[str]:
    """Every feature name declared in settings or used by any plan (one query; error paths)."""
    used = frozenset(PlanLimit.objects.values_list("feature", flat=True).distinct())
    return used | frozenset(conf.FEATURES)


def _tenant_id(tenant: Tenant | int) -> int:
    if isinstance(tenant, Tenant):
        if tenant.pk is None:
            raise UnknownTenant("The tenant has not been saved.")
        return int(tenant.pk)
    if isinstance(tenant, bool) or not isinstance(tenant, int):
        raise UnknownTenant(f"Expected a Tenant or its id, got {tenant!r}.")
    return tenant


def next_rules_version(current: int = 0) -> int:
    """A version no earlier state of a tenant had: the time in microseconds, past ``current``."""
    return max(time.time_ns() // 1000, current + 1)


def bump_rules_version(tenants: QuerySet[Tenant] | Iterable[int]) -> int:
    """Move the ``rules_version`` of these tenants (a queryset or primary keys) to a new value,
    in the current transaction, and tell the store after it commits; returns the value.

    Call it in the transaction that changes what they may use: a count that runs after that
    transaction commits is refused by the store under rules read before it.
    """
    if not isinstance(tenants, QuerySet):
        tenants = Tenant.objects.filter(pk__in=list(tenants))
    ids = [int(pk) for pk in tenants.values_list("pk", flat=True)]
    version = next_rules_version()
    if ids:
        tenants.update(rules_version=version)
        rules_moved(ids)
    return version


def rules_moved(tenant_ids: list[int]) -> None:
    """The versions of these tenants moved in the current transaction: this process forgets
    their rules now, and the store hears of it after commit."""
    database = _database()
    for tenant_id in tenant_ids:
        _REMEMBERED.pop((database, tenant_id), None)
    _tell_store(tenant_ids)


def _tell_store(ids: list[int]) -> None:
    from django.db import transaction

    from usage_limits.backends import get_store

    def tell() -> None:
        get_store().rules_changed(ids)

    transaction.on_commit(tell, using=router.db_for_write(Tenant))


def forget_tenant(tenant_id: int) -> None:
    """A tenant's rules changed without a signal (``QuerySet.update()``, raw SQL)."""
    bump_rules_version([tenant_id])


def forget_plan(plan_id: int, *, plan_version_moved: bool = False) -> None:
    """A plan or its limits changed: move the plan's version (its limits are read again) and
    the rules version of every tenant on it. Called by the signals, and after bulk changes."""
    if not plan_version_moved:
        Plan.objects.filter(pk=plan_id).update(rules_version=next_rules_version())
    _PLANS.pop((_database(), plan_id), None)
    bump_rules_version(Tenant.objects.filter(plan_id=plan_id))


def forget_all() -> None:
    """Every tenant reads its rules again, in every process, and every process its remembered
    request tenants.

    For bulk changes made without signals (``QuerySet.update()``, raw SQL, a restored dump).
    """
    from usage_limits.tenancy import forget_memberships

    Plan.objects.update(rules_version=next_rules_version())
    bump_rules_version(Tenant.objects.all())
    with _remembered_lock:
        _REMEMBERED.clear()
        _PLANS.clear()
    forget_memberships()
