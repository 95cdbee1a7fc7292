"""What a tenant may use: its plan's limits with per-tenant overrides applied, cached.

Enforcement must cost one store statement, so the plan, its limits and the tenant's overrides are
read once and kept in Django's cache (``USAGE_LIMITS["CACHE_ALIAS"]``) in two entries: one per
tenant (status, plan id, overrides) and one per plan (its limits). :mod:`usage_limits.invalidation`
deletes them whenever a plan, a limit, an override or a tenant is saved, so a plan change is seen by
the very next check. In a multi-process deployment the cache alias must be shared (Redis,
Memcached, database) for that to hold across processes; the timeout bounds staleness otherwise.

On top of that, each process keeps the rules it built in memory, tagged with a *generation*
token held in the shared cache. Every invalidation writes a new token, so the steady-state cost
of resolving a tenant is one cache read of a small value instead of two reads of pickled rules.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.dispatch import receiver
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

CACHE_PREFIX = "usage_limits:v1"


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


# The cache object per thread, as ``caches[alias]`` gives it: that lookup goes through asgiref's
# Local, a couple of microseconds on every enforced request. Dropped when CACHES change.
_held_cache = threading.local()
_caches_epoch = 0


def _cache() -> BaseCache:
    alias = conf.CACHE_ALIAS
    held = getattr(_held_cache, "entry", None)
    if held is not None and held[0] == alias and held[1] == _caches_epoch:
        cache: BaseCache = held[2]
        return cache
    cache = caches[alias]
    _held_cache.entry = (alias, _caches_epoch, cache)
    return cache


@receiver(setting_changed, dispatch_uid="usage_limits_rules_caches_changed")
def _caches_changed(setting: str, **kwargs: object) -> None:
    global _caches_epoch
    if setting == "CACHES":  # (a changed CACHE_ALIAS is seen by _cache() itself)
        _caches_epoch += 1


def tenant_cache_key(tenant_id: int) -> str:
    return f"{CACHE_PREFIX}:tenant:{tenant_id}"


def plan_cache_key(plan_id: int) -> str:
    return f"{CACHE_PREFIX}:plan:{plan_id}"


FEATURES_CACHE_KEY = f"{CACHE_PREFIX}:features"
GENERATION_CACHE_KEY = f"{CACHE_PREFIX}:generation"
# Rules built by this process: tenant id -> (generation, rules). Bounded; cleared when full.
_LOCAL_RULES: dict[int, tuple[str, TenantRules]] = {}
_LOCAL_RULES_MAX = 10_000
_local_lock = threading.Lock()


# The generation of a process whose cache alias is process-local (LocMemCache, DummyCache): such a
# cache is this process's memory anyway, so the token is kept here and read without the cache's
# key validation and pickling (about 4 us per check). A DummyCache keeps nothing, so without this
# a plan change would never reach the rules this process remembers. The token also turns over
# every CACHE_TIMEOUT seconds: other processes cannot tell this one about their changes, and
# that bounds how long it keeps rules they changed.
_process_generation = secrets.token_hex(8)
_process_generation_expires = 0.0


def _is_process_local(cache: BaseCache) -> bool:
    return isinstance(cache, LocMemCache | DummyCache)


def _generation() -> str:
    global _process_generation, _process_generation_expires
    cache = _cache()
    if _is_process_local(cache):
        now = time.monotonic()
        if now >= _process_generation_expires:
            _process_generation = secrets.token_hex(8)
            _process_generation_expires = now + conf.CACHE_TIMEOUT
        return _process_generation
    generation = cache.get(GENERATION_CACHE_KEY)
    if not isinstance(generation, str):
        # Missing or evicted: start a new generation, which only ever drops local copies.
        cache.add(GENERATION_CACHE_KEY, secrets.token_hex(8), None)
        generation = cache.get(GENERATION_CACHE_KEY) or ""
    return str(generation)


def _new_generation() -> None:
    global _process_generation
    _process_generation = secrets.token_hex(8)
    _cache().set(GENERATION_CACHE_KEY, secrets.token_hex(8), None)


# A change made inside a transaction is visible to reads in that transaction before it commits.
# Rules built from such reads must not be kept: if the transaction rolled back, they would go on
# enforcing a plan, limit or override that never existed. So every invalidation marks the
# transactions open on this thread (their outermost atomic block), and while a marked one runs,
# rules are built but not stored; the receivers of
# :mod:`usage_limits.invalidation` drop the entries again after commit. (An atomic block reused
# as a decorator is the same object on its next call: that call then stores nothing either,
# which costs reads, never correctness.)
_UNCOMMITTED_CHANGE = "_usage_limits_uncommitted_change"


def _outermost_block(connection: BaseDatabaseWrapper) -> object | None:
    """The atomic block whose end commits or rolls back what runs in it now.

    Django's ``TestCase`` wraps every test in blocks of its own (``_from_testcase``) that never
    commit: a test sees them as the database itself, as a site would, and they are skipped.
    """
    for block in connection.atomic_blocks:
        if not getattr(block, "_from_testcase", False):
            return block
    return None


def _mark_open_transactions() -> None:
    for connection in connections.all(initialized_only=True):
        block = _outermost_block(connection)
        if block is not None:
            connection.__dict__[_UNCOMMITTED_CHANGE] = block


def _uncommitted_change_visible() -> bool:
    """Whether this thread is inside a transaction that changed a plan, limit, override or
    tenant: the rules it reads now may be used, but must not be remembered."""
    for connection in connections.all(initialized_only=True):
        marked = connection.__dict__.get(_UNCOMMITTED_CHANGE)
        if marked is None:
            continue
        if _outermost_block(connection) is marked:
            return True
        del connection.__dict__[_UNCOMMITTED_CHANGE]  # that transaction has ended
    return False


def normalise_limit(limit: int | None) -> int | None:
    return None if limit is None or limit == UNLIMITED else int(limit)


def feature_label(feature: str) -> str:
    declared = conf.FEATURES.get(feature, {})
    return str(declared.get("label") or feature.replace("_", " ").capitalize())


def feature_period(feature: str, period: str) -> str:
    declared = conf.FEATURES.get(feature, {})
    return period or str(declared.get("period") or conf.DEFAULT_PERIOD)


def load_plan_rules(plan_id: int) -> PlanRules:
    cache = _cache()
    key = plan_cache_key(plan_id)
    cached = cache.get(key)
    if isinstance(cached, PlanRules):
        return cached
    plan = Plan.objects.get(pk=plan_id)
    rules = {}
    for limit in PlanLimit.objects.filter(plan_id=plan_id):
        rules[limit.feature] = FeatureRule(
            feature=limit.feature,
            kind=limit.kind,
            limit=normalise_limit(limit.limit),
            period=feature_period(limit.feature, limit.period)
            if limit.kind == FeatureKind.METERED
            else None,
            label=feature_label(limit.feature),
        )
    plan_rules = PlanRules(plan_id=plan.pk, code=plan.code, name=plan.name, rules=rules)
    if not _uncommitted_change_visible():
        cache.set(key, plan_rules, conf.CACHE_TIMEOUT)
    return plan_rules


def _load_tenant_part(tenant_id: int) -> dict[str, object]:
    cache = _cache()
    key = tenant_cache_key(tenant_id)
    cached = cache.get(key)
    if isinstance(cached, dict):
        return cached
    try:
        tenant = Tenant.objects.get(pk=tenant_id)
    except (Tenant.DoesNotExist, ValueError, TypeError):
        raise UnknownTenant(f"No tenant with id {tenant_id!r}.") from None
    overrides = {
        o.feature: o.limit for o in TenantLimitOverride.objects.filter(tenant_id=tenant_id)
    }
    part = _tenant_part(tenant, overrides)
    if not _uncommitted_change_visible():
        cache.set(key, part, conf.CACHE_TIMEOUT)
    return part


def _tenant_part(tenant: Tenant, overrides: Mapping[str, int | None]) -> dict[str, object]:
    return {
        "name": tenant.name,
        "plan_id": tenant.plan_id,
        "status": tenant.subscription_status,
        "past_due_since": tenant.past_due_since,
        "billing_anchor": tenant.billing_anchor or tenant.created_at,
        "reset_mode": tenant.reset_mode,
        "reset_period": tenant.reset_period,
        "counting_since": tenant.counting_since,
        "overrides": {feature: normalise_limit(limit) for feature, limit in overrides.items()},
    }


def tenant_rules(tenant: Tenant | int) -> TenantRules:
    """The effective rules of a tenant (an instance or a primary key)."""
    tenant_id = _tenant_id(tenant)
    generation = _generation()
    local = _LOCAL_RULES.get(tenant_id)
    if local is not None and local[0] == generation:
        return local[1]
    rules = _compose(tenant_id, _load_tenant_part(tenant_id))
    if _uncommitted_change_visible():
        return rules
    with _local_lock:
        if len(_LOCAL_RULES) >= _LOCAL_RULES_MAX:
            _LOCAL_RULES.clear()
        _LOCAL_RULES[tenant_id] = (generation, rules)
    return rules


def rules_for_row(tenant: Tenant, overrides: Mapping[str, int | None]) -> TenantRules:
    """The rules of a tenant row already loaded, with its overrides (feature -> stored limit).

    For batch jobs that read many tenants in a few queries: no cache is read or written, and the
    row's own values win over whatever the cache holds.
    """
    return _compose(int(tenant.pk), _tenant_part(tenant, overrides))


def _compose(tenant_id: int, part: dict[str, object]) -> TenantRules:
    plan = load_plan_rules(int(part["plan_id"]))  # type: ignore[call-overload]
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
    )


def known_features() -> frozenset[str]:
    """Every feature name declared in settings or used by any plan (cached)."""
    cache = _cache()
    cached = cache.get(FEATURES_CACHE_KEY)
    if not isinstance(cached, frozenset):
        cached = frozenset(PlanLimit.objects.values_list("feature", flat=True).distinct())
        if not _uncommitted_change_visible():
            cache.set(FEATURES_CACHE_KEY, cached, conf.CACHE_TIMEOUT)
    return cached | frozenset(conf.FEATURES)


def _tenant_id(tenant: Tenant | int) -> int:
    if isinstance(tenant, Tenant):
        if tenant.pk is None:
            raise UnknownTenant("The tenant has not been saved.")
        return int(tenant.pk)
    if isinstance(tenant, bool) or not isinstance(tenant, int):
        raise UnknownTenant(f"Expected a Tenant or its id, got {tenant!r}.")
    return tenant


def forget_tenant(tenant_id: int) -> None:
    _mark_open_transactions()
    _cache().delete(tenant_cache_key(tenant_id))
    _new_generation()
    _LOCAL_RULES.pop(tenant_id, None)


def forget_memberships() -> None:
    """Drop every process's remembered request tenants (:mod:`usage_limits.tenancy`)."""
    _mark_open_transactions()
    _new_generation()


def forget_all() -> None:
    """Drop every cached rule and remembered request tenant, in every process.

    For bulk changes made without signals (``QuerySet.update()``, raw SQL, a restored dump):
    the next check reads plans, limits, tenants and memberships again.
    """
    _mark_open_transactions()
    cache = _cache()
    keys = [plan_cache_key(pk) for pk in Plan.objects.values_list("pk", flat=True)]
    keys += [tenant_cache_key(pk) for pk in Tenant.objects.values_list("pk", flat=True)]
    for start in range(0, len(keys), 1000):
        cache.delete_many(keys[start : start + 1000])
    cache.delete(FEATURES_CACHE_KEY)
    with _local_lock:
        _LOCAL_RULES.clear()
    _new_generation()


def current_generation() -> str:
    """The token that changes whenever a plan, a tenant or a membership changes (shared)."""
    return _generation()


def forget_plan(plan_id: int) -> None:
    _mark_open_transactions()
    _cache().delete_many([plan_cache_key(plan_id), FEATURES_CACHE_KEY])
    _new_generation()
