from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db.models import F

from usage_limits import (
    DenialReason,
    check_limit,
    consume,
    get_usage,
    has_feature,
    increment_usage,
    refund,
    reset_usage,
    set_usage,
)
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidQuantity,
    UnknownFeature,
    UnknownTenant,
    WrongFeatureKind,
)
from usage_limits.models import (
    Plan,
    PlanLimit,
    SubscriptionStatus,
    Tenant,
    TenantLimitOverride,
    UsageRecord,
    UsageReset,
)
from usage_limits.testing.factories import (
    LimitOverrideFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

pytestmark = pytest.mark.django_db


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


def test_consume_admits_up_to_the_limit_and_then_denies_without_counting(tenant: Tenant) -> None:
    plan_with_limits("FREE", api_calls=3)
    results = [consume(tenant, "api_calls") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.used for r in results] == [1, 2, 3, 3]
    denied = results[-1]
    assert denied.reason == DenialReason.QUOTA_EXCEEDED
    assert denied.remaining == 0
    assert denied.limit == 3
    assert UsageRecord.objects.get(tenant=tenant, feature="api_calls").used == 3


def test_quantity_larger_than_what_is_left_is_denied_whole(tenant: Tenant) -> None:
    assert consume(tenant, "api_calls", 95).allowed
    decision = consume(tenant, "api_calls", 10)
    assert not decision.allowed
    assert decision.used == 95
    assert consume(tenant, "api_calls", 5).used == 100


def test_quantity_above_the_limit_on_a_fresh_period_is_denied(tenant: Tenant) -> None:
    decision = consume(tenant, "api_calls", 101)
    assert not decision.allowed
    assert decision.used == 0
    assert used(tenant) == 0


def test_seeds_verification_scenario_upgrade_passes_at_once(tenant: Tenant, pro_plan: Plan) -> None:
    plan_with_limits("FREE", api_calls=3)
    assert [consume(tenant, "api_calls").allowed for _ in range(4)] == [True, True, True, False]
    tenant.plan = pro_plan
    tenant.save()
    decision = consume(tenant, "api_calls")
    assert decision.allowed
    assert decision.unlimited
    assert decision.plan == "PRO"
    assert decision.used == 4


def test_limit_edited_by_an_operator_applies_on_the_next_check(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 100)
    assert not consume(tenant, "api_calls").allowed
    limit = PlanLimit.objects.get(plan=tenant.plan, feature="api_calls")
    limit.limit = 150
    limit.save()
    assert consume(tenant, "api_calls").allowed


def test_unlimited_counts_but_never_denies(pro_plan: Plan) -> None:
    tenant = TenantFactory(plan=pro_plan)
    decision = increment_usage(tenant, "api_calls", 10**9)
    assert decision.allowed
    assert decision.unlimited
    assert decision.remaining is None
    assert decision.percent == 0.0
    assert consume(tenant, "api_calls", 10**9).used == 2 * 10**9


def test_override_wins_over_the_plan_in_both_directions(tenant: Tenant) -> None:
    override = LimitOverrideFactory(tenant=tenant, feature="api_calls", limit=2)
    assert [consume(tenant, "api_calls").allowed for _ in range(3)] == [True, True, False]
    override.limit = -1
    override.save()
    decision = consume(tenant, "api_calls", 500)
    assert decision.allowed
    assert decision.unlimited
    override.delete()
    assert consume(tenant, "api_calls").limit == 100


def test_override_can_grant_a_feature_the_plan_lacks(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("TINY", api_calls=5))
    with pytest.raises(FeatureNotInPlan):
        consume(tenant, "projects")
    assert not has_feature(tenant, "advanced_analytics")
    TenantLimitOverride.objects.create(tenant=tenant, feature="advanced_analytics", limit=1)
    TenantLimitOverride.objects.create(tenant=tenant, feature="projects", limit=2)
    assert has_feature(tenant, "advanced_analytics")
    assert [consume(tenant, "projects").allowed for _ in range(3)] == [True, True, False]


def test_increment_usage_records_overage(tenant: Tenant) -> None:
    decision = increment_usage(tenant, "api_calls", 130)
    assert decision.allowed
    assert decision.used == 130
    assert decision.remaining == 0
    assert decision.percent == 130.0
    assert decision.level == "red"
    assert not consume(tenant, "api_calls").allowed


def test_check_limit_counts_nothing(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 99)
    assert check_limit(tenant, "api_calls").allowed
    assert not check_limit(tenant, "api_calls", 2).allowed
    assert used(tenant) == 99


def test_refund_gives_back_and_never_goes_below_zero(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 5)
    assert refund(tenant, "api_calls", 2).used == 3
    decision = refund(tenant, "api_calls", 10)
    assert decision.used == 0
    assert decision.used_before == 3
    assert refund(tenant, "projects").used == 0  # nothing counted yet: nothing to give back


def test_allocation_features_are_levels_that_never_reset(tenant: Tenant) -> None:
    with time_machine.travel(dt.datetime(2026, 1, 15, tzinfo=dt.UTC), tick=False):
        assert [consume(tenant, "projects").allowed for _ in range(4)] == [True, True, True, False]
    with time_machine.travel(dt.datetime(2026, 2, 15, tzinfo=dt.UTC), tick=False):
        assert used(tenant, "projects") == 3
        assert not consume(tenant, "projects").allowed
        refund(tenant, "projects")
        assert consume(tenant, "projects").allowed
        usage = get_usage(tenant).feature("projects")
        assert usage.resets_at is None


def test_set_usage_sets_a_level(tenant: Tenant) -> None:
    decision = set_usage(tenant, "seats", 1)
    assert (decision.used_before, decision.used) == (0, 1)
    assert not consume(tenant, "seats").allowed
    assert set_usage(tenant, "seats", 0).used == 0
    assert consume(tenant, "seats").allowed


def test_lazy_reset_starts_a_new_period_with_no_job(tenant: Tenant) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=dt.UTC), tick=False):
        consume(tenant, "api_calls", 100)
        assert not consume(tenant, "api_calls").allowed
    with time_machine.travel(dt.datetime(2026, 4, 1, 0, 0, 0, tzinfo=dt.UTC), tick=False):
        decision = consume(tenant, "api_calls")
        assert decision.allowed
        assert decision.used == 1
        assert decision.period.key == "2026-04"
        assert decision.resets_at == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    rows = dict(UsageRecord.objects.filter(tenant=tenant).values_list("period_key", "used"))
    assert rows == {"2026-03": 100, "2026-04": 1}


def test_billing_anchored_period_follows_the_tenant_anchor(db: None) -> None:
    plan = plan_with_limits("BILLED", api_calls=10, period="billing_monthly")
    tenant = TenantFactory(plan=plan, billing_anchor=dt.datetime(2026, 1, 31, 9, tzinfo=dt.UTC))
    with time_machine.travel(dt.datetime(2026, 2, 27, tzinfo=dt.UTC), tick=False):
        decision = consume(tenant, "api_calls")
    assert decision.period.start == dt.datetime(2026, 1, 31, 9, tzinfo=dt.UTC)
    assert decision.resets_at == dt.datetime(2026, 2, 28, 9, tzinfo=dt.UTC)


def test_get_usage_reports_every_feature_in_the_seeds_shape(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 47)
    consume(tenant, "projects", 2)
    with time_machine.travel(dt.datetime(2026, 3, 10, tzinfo=dt.UTC), tick=False):
        consume(tenant, "api_calls", 47)
        data = get_usage(tenant).as_dict()
    assert data["plan"] == "FREE"
    by_feature = {f["feature"]: f for f in data["features"]}
    assert by_feature["api_calls"] == {
        "feature": "api_calls",
        "label": "API calls",
        "kind": "metered",
        "current": 47,
        "limit": 100,
        "remaining": 53,
        "percent": 47.0,
        "level": "ok",
        "unlimited": False,
        "included": True,
        "resets_at": "2026-04-01T00:00:00+00:00",
    }
    assert by_feature["projects"]["current"] == 2
    assert by_feature["projects"]["level"] == "amber"  # 2 of 3 = 66.7 %
    assert by_feature["projects"]["resets_at"] is None
    assert by_feature["advanced_analytics"]["included"] is False
    assert list(by_feature) == ["api_calls", "projects", "seats", "advanced_analytics"]


def test_has_feature(tenant: Tenant, pro_plan: Plan) -> None:
    assert not has_feature(tenant, "advanced_analytics")
    assert has_feature(TenantFactory(plan=pro_plan), "advanced_analytics")
    with pytest.raises(UnknownFeature):
        has_feature(tenant, "teleportation")


@pytest.mark.parametrize(
    ("status", "days_past_due", "allowed"),
    [
        (SubscriptionStatus.ACTIVE, None, True),
        (SubscriptionStatus.TRIALING, None, True),
        (SubscriptionStatus.PAST_DUE, 6, True),
        (SubscriptionStatus.PAST_DUE, 8, False),
        (SubscriptionStatus.CANCELED, None, False),
    ],
)
def test_subscription_status_gates_use(
    free_plan: Plan, status: str, days_past_due: int | None, allowed: bool
) -> None:
    since = None
    if days_past_due is not None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_past_due)
    tenant = TenantFactory(plan=free_plan, subscription_status=status, past_due_since=since)
    decision = consume(tenant, "api_calls")
    assert decision.allowed is allowed
    assert used(tenant) == (1 if allowed else 0)
    if not allowed:
        assert decision.reason == DenialReason.SUBSCRIPTION_INACTIVE
        assert check_limit(tenant, "api_calls").reason == DenialReason.SUBSCRIPTION_INACTIVE


BAD_QUANTITIES: list[Any] = [0, -1, 1.5, 1.0, True, False, "1", None, 2**63, math.nan, Decimal("2")]


@pytest.mark.parametrize("quantity", BAD_QUANTITIES, ids=repr)
@pytest.mark.parametrize("operation", [consume, increment_usage, refund, check_limit])
def test_bad_quantities_raise_and_count_nothing(
    tenant: Tenant, operation: Any, quantity: Any
) -> None:
    consume(tenant, "api_calls", 5)
    with pytest.raises(InvalidQuantity):
        operation(tenant, "api_calls", quantity)
    assert used(tenant) == 5


@pytest.mark.parametrize("value", [-1, 1.5, None, "3", 2**63])
def test_set_usage_rejects_bad_values(tenant: Tenant, value: Any) -> None:
    with pytest.raises(InvalidQuantity):
        set_usage(tenant, "seats", value)
    assert used(tenant, "seats") == 0


@pytest.mark.parametrize("feature", ["", "teleportation", None, 7])
def test_unknown_features_raise(tenant: Tenant, feature: Any) -> None:
    with pytest.raises(UnknownFeature):
        consume(tenant, feature)
    assert not UsageRecord.objects.exists()


def test_feature_the_plan_lacks_raises(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("TINY", api_calls=5))
    with pytest.raises(FeatureNotInPlan, match="TINY"):
        consume(tenant, "projects")


def test_boolean_features_have_no_counter(tenant: Tenant) -> None:
    with pytest.raises(WrongFeatureKind):
        consume(tenant, "advanced_analytics")


@pytest.mark.parametrize("ref", [999_999, "1", None, True])
def test_unknown_tenant_raises(db: None, ref: Any) -> None:
    with pytest.raises(UnknownTenant):
        consume(ref, "api_calls")
    assert not UsageRecord.objects.exists()


def test_idempotency_key_counts_once_and_replays_the_outcome(tenant: Tenant) -> None:
    first = increment_usage(tenant, "api_calls", 7, idempotency_key="evt-1")
    again = increment_usage(tenant, "api_calls", 7, idempotency_key="evt-1")
    assert (first.used, first.replayed) == (7, False)
    assert (again.used, again.replayed, again.allowed) == (7, True, True)
    assert used(tenant) == 7
    consume(tenant, "api_calls", 93)
    denied = consume(tenant, "api_calls", 1, idempotency_key="evt-2")
    assert not denied.allowed
    replay = consume(tenant, "api_calls", 1, idempotency_key="evt-2")
    assert (replay.allowed, replay.replayed) == (False, True)
    assert used(tenant) == 100


def test_idempotency_keys_are_per_tenant(tenant: Tenant, free_plan: Plan) -> None:
    other = TenantFactory(plan=free_plan)
    increment_usage(tenant, "api_calls", idempotency_key="same")
    assert not increment_usage(other, "api_calls", idempotency_key="same").replayed
    assert used(other) == 1


def test_reset_writes_an_audit_row_and_restarts_the_counter(tenant: Tenant) -> None:
    operator = UserFactory(username="ops")
    consume(tenant, "api_calls", 42)
    [result] = reset_usage(tenant, "api_calls", by=operator, reason="Goodwill credit")
    assert result.value_before == 42
    assert used(tenant) == 0
    audit = UsageReset.objects.get()
    assert (audit.feature, audit.value_before, audit.value_after) == ("api_calls", 42, 0)
    assert (audit.performed_by, audit.performed_by_name, audit.reason) == (
        operator,
        "ops",
        "Goodwill credit",
    )


def test_reset_without_feature_resets_every_metered_feature_only(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 10)
    consume(tenant, "projects", 2)
    results = reset_usage(tenant)
    assert [r.feature for r in results] == ["api_calls"]
    assert used(tenant, "projects") == 2


def test_rules_are_not_bypassed_by_a_stale_instance(tenant: Tenant, pro_plan: Plan) -> None:
    stale = Tenant.objects.get(pk=tenant.pk)
    Tenant.objects.filter(pk=tenant.pk).update(plan=pro_plan)
    from usage_limits.rules import forget_tenant

    forget_tenant(tenant.pk)
    assert consume(stale, "api_calls", 1000).allowed
    assert stale.plan.code == "FREE"


def test_counter_row_is_found_through_the_unique_index(tenant: Tenant) -> None:
    consume(tenant, "api_calls")
    UsageRecord.objects.filter(tenant=tenant).update(used=F("used") + 9)
    assert consume(tenant, "api_calls").used == 11


def test_a_key_reused_with_another_quantity_is_refused_and_counts_nothing(tenant: Tenant) -> None:
    from usage_limits.exceptions import IdempotencyKeyReused

    assert consume(tenant, "api_calls", 2, idempotency_key="job-1").used == 2
    with pytest.raises(IdempotencyKeyReused, match="quantity 2, not 5"):
        consume(tenant, "api_calls", 5, idempotency_key="job-1")
    with pytest.raises(IdempotencyKeyReused, match="'api_calls', not 'projects'"):
        increment_usage(tenant, "projects", 2, idempotency_key="job-1")
    assert consume(tenant, "api_calls", 2, idempotency_key="job-1").replayed
    assert get_usage(tenant).feature("api_calls").used == 2
