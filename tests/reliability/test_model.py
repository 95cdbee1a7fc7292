"""A model-based proof: random histories against the engine and a small reference model.

Hypothesis' stateful testing draws sequences of consume, increment_usage, refund, reset,
set_usage, plan changes, per-tenant override changes, subscription status changes, switches
between lazy and manual reset mode (a manual tenant's meter never rolls over) and clock
jumps (within a month, across one or several month boundaries, to the last second of a month).
Each step runs against the engine on the real store and against :class:`Reference`, a few
dozen lines of plain Python that say what the answer must be. After every step, every
observable value must agree: each decision (allowed, used, limit, reason), each feature of
``get_usage`` (used, limit, period, remaining), ``check_limit`` and the warning signals sent
(which levels, once per period). A disagreement is shrunk by Hypothesis to the shortest history
that shows it.

Runs with ``derandomize=True`` when ``CI`` is set, so CI explores the same histories each run;
``RELIABILITY_MODEL_EXAMPLES`` raises the number of histories for a longer local hunt.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, ClassVar

import pytest
import time_machine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from usage_limits import (
    DenialReason,
    check_limit,
    consume,
    get_usage,
    increment_usage,
    refund,
    reset_usage,
    set_usage,
    signals,
)
from usage_limits.models import (
    Plan,
    ResetMode,
    SubscriptionStatus,
    Tenant,
    TenantLimitOverride,
)
from usage_limits.results import Decision
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .figures import Figures
from .stores import StoreTarget

pytestmark = pytest.mark.django_db(transaction=True)

# plan code -> limits (None: unlimited). Small numbers, so histories reach every edge quickly.
PLANS: dict[str, dict[str, int | None]] = {
    "MODEL-SMALL": {"api_calls": 5, "projects": 2},
    "MODEL-MEDIUM": {"api_calls": 12, "projects": 4},
    "MODEL-UNLIMITED": {"api_calls": None, "projects": None},
    "MODEL-NONE": {"api_calls": 0, "projects": 0},
}
FEATURES = ("api_calls", "projects")  # metered monthly (UTC), allocation
WARNINGS = (80, 100)  # the default WARNING_THRESHOLDS
GRACE = timedelta(days=7)  # the default PAST_DUE_GRACE_DAYS
START = datetime(2027, 1, 20, 12, 0, tzinfo=UTC)
EXCEEDED = "exceeded"

EXAMPLES = int(os.environ.get("RELIABILITY_MODEL_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

quantities = st.integers(min_value=1, max_value=7)
features = st.sampled_from(FEATURES)


@dataclass
class Reference:
    """What the engine must answer, in plain Python. No database, no periods module."""

    now: datetime
    plan: str
    overrides: dict[str, int | None] = field(default_factory=dict)
    status: str = SubscriptionStatus.ACTIVE
    manual_reset: bool = False  # ResetMode.MANUAL: the metered counter never rolls over
    past_due_since: datetime | None = None
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    announced: set[tuple[str, str, int | str]] = field(default_factory=set)

    def period(self, feature: str) -> str:
        if feature != "api_calls":
            return "all"
        return "manual" if self.manual_reset else f"{self.now:%Y-%m}"

    def limit(self, feature: str) -> int | None:
        if feature in self.overrides:
            return self.overrides[feature]
        return PLANS[self.plan][feature]

    def used(self, feature: str) -> int:
        return self.counters.get((feature, self.period(feature)), 0)

    def store(self, feature: str, value: int) -> None:
        self.counters[(feature, self.period(feature))] = value

    def may_use(self) -> bool:
        if self.status == SubscriptionStatus.PAST_DUE:
            return self.past_due_since is not None and self.now < self.past_due_since + GRACE
        return self.status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)

    def fits(self, feature: str, quantity: int) -> bool:
        limit = self.limit(feature)
        return limit is None or self.used(feature) + quantity <= limit

    def announce_rise(self, feature: str, before: int, after: int) -> list[tuple[str, int | str]]:
        """Warnings due when a counter rises: each level once per period, overage once."""
        limit = self.limit(feature)
        due: list[int | str] = []
        if limit is not None and limit > 0:
            due += [
                t
                for t in WARNINGS
                if Fraction(before, limit) < Fraction(t, 100) <= Fraction(after, limit)
            ]
        if limit is not None and before <= limit < after:
            due.append(EXCEEDED)
        return self.announce(feature, due)

    def announce(self, feature: str, levels: list[int | str]) -> list[tuple[str, int | str]]:
        fresh = []
        for level in levels:
            key = (feature, self.period(feature), level)
            if key not in self.announced:
                self.announced.add(key)
                fresh.append((feature, level))
        return fresh

    def forget_announcements(self, feature: str) -> None:
        period = self.period(feature)
        self.announced = {a for a in self.announced if (a[0], a[1]) != (feature, period)}


class QuotaMachine(RuleBasedStateMachine):
    plans: ClassVar[dict[str, Plan]] = {}
    steps: ClassVar[Counter[str]] = Counter()
    histories: ClassVar[list[int]] = [0]

    def __init__(self) -> None:
        super().__init__()
        self.traveller = time_machine.travel(START, tick=False)
        self.clock = self.traveller.start()
        self.tenant: Tenant = TenantFactory(plan=self.plans["MODEL-SMALL"])
        self.model = Reference(now=START, plan="MODEL-SMALL")
        self.heard: list[tuple[str, int | str]] = []
        signals.threshold_crossed.connect(self._on_threshold)
        signals.quota_exceeded.connect(self._on_exceeded)
        self.histories[0] += 1

    def teardown(self) -> None:
        signals.threshold_crossed.disconnect(self._on_threshold)
        signals.quota_exceeded.disconnect(self._on_exceeded)
        self.traveller.stop()

    def _on_threshold(
        self, sender: Any, tenant_id: int, feature: str, threshold: int, **_: Any
    ) -> None:
        if tenant_id == self.tenant.pk:
            self.heard.append((feature, threshold))

    def _on_exceeded(self, sender: Any, tenant_id: int, feature: str, **_: Any) -> None:
        if tenant_id == self.tenant.pk:
            self.heard.append((feature, EXCEEDED))

    def _expect_signals(self, expected: list[tuple[str, int | str]]) -> None:
        heard, self.heard = self.heard, []
        assert sorted(map(str, heard)) == sorted(map(str, expected)), (heard, expected)

    def _expect(
        self, decision: Decision, feature: str, *, allowed: bool, reason: DenialReason | None = None
    ) -> None:
        assert decision.allowed is allowed, decision
        assert decision.used == self.model.used(feature), (decision, self.model)
        assert decision.limit == self.model.limit(feature), decision
        assert decision.reason == reason, decision

    # --- counting ---------------------------------------------------------------------------

    @rule(feature=features, quantity=quantities)
    def consume(self, feature: str, quantity: int) -> None:
        self.steps["consume"] += 1
        decision = consume(self.tenant, feature, quantity)
        model = self.model
        if not model.may_use():
            self._expect(
                decision, feature, allowed=False, reason=DenialReason.SUBSCRIPTION_INACTIVE
            )
            self._expect_signals([])
        elif model.fits(feature, quantity):
            before = model.used(feature)
            model.store(feature, before + quantity)
            self._expect(decision, feature, allowed=True)
            self._expect_signals(model.announce_rise(feature, before, before + quantity))
        else:
            self._expect(decision, feature, allowed=False, reason=DenialReason.QUOTA_EXCEEDED)
            self._expect_signals(model.announce(feature, [EXCEEDED]))

    @rule(feature=features, quantity=quantities)
    def increment(self, feature: str, quantity: int) -> None:
        self.steps["increment_usage"] += 1
        decision = increment_usage(self.tenant, feature, quantity)
        before = self.model.used(feature)
        self.model.store(feature, before + quantity)
        self._expect(decision, feature, allowed=True)
        self._expect_signals(self.model.announce_rise(feature, before, before + quantity))

    @rule(feature=features, quantity=quantities)
    def refund(self, feature: str, quantity: int) -> None:
        self.steps["refund"] += 1
        decision = refund(self.tenant, feature, quantity)
        self.model.store(feature, max(self.model.used(feature) - quantity, 0))
        self._expect(decision, feature, allowed=True)
        self._expect_signals([])

    @rule(feature=features, value=st.integers(min_value=0, max_value=20))
    def set_usage(self, feature: str, value: int) -> None:
        self.steps["set_usage"] += 1
        decision = set_usage(self.tenant, feature, value)
        before = self.model.used(feature)
        self.model.store(feature, value)
        self._expect(decision, feature, allowed=True)
        expected = self.model.announce_rise(feature, before, value) if value > before else []
        self._expect_signals(expected)

    @rule(feature=features)
    def reset(self, feature: str) -> None:
        self.steps["reset_usage"] += 1
        (result,) = reset_usage(self.tenant, feature, reason="model")
        assert result.value_before == self.model.used(feature)
        self.model.store(feature, 0)
        self.model.forget_announcements(feature)
        self._expect_signals([])

    # --- what the tenant may use ------------------------------------------------------------

    @rule(plan=st.sampled_from(sorted(PLANS)))
    def change_plan(self, plan: str) -> None:
        self.steps["plan change"] += 1
        self.tenant.plan = self.plans[plan]
        self.tenant.save()
        self.model.plan = plan

    @rule(feature=features, limit=st.one_of(st.none(), st.just(-1), st.integers(0, 15)))
    def set_override(self, feature: str, limit: int | None) -> None:
        self.steps["override change"] += 1
        TenantLimitOverride.objects.update_or_create(
            tenant=self.tenant, feature=feature, defaults={"limit": limit}
        )
        self.model.overrides[feature] = None if limit in (None, -1) else limit

    @rule(feature=features)
    def drop_override(self, feature: str) -> None:
        self.steps["override change"] += 1
        for override in TenantLimitOverride.objects.filter(tenant=self.tenant, feature=feature):
            override.delete()
        self.model.overrides.pop(feature, None)

    @rule(status=st.sampled_from(list(SubscriptionStatus)))
    def change_status(self, status: SubscriptionStatus) -> None:
        self.steps["status change"] += 1
        since = self.model.now if status == SubscriptionStatus.PAST_DUE else None
        self.tenant.subscription_status = status
        self.tenant.past_due_since = since
        self.tenant.save()
        self.model.status, self.model.past_due_since = status, since

    @rule(manual=st.booleans())
    def change_reset_mode(self, manual: bool) -> None:
        self.steps["reset mode change"] += 1
        self.tenant.reset_mode = ResetMode.MANUAL if manual else ResetMode.LAZY
        self.tenant.save()
        self.model.manual_reset = manual

    # --- time -------------------------------------------------------------------------------

    @rule(minutes=st.integers(min_value=1, max_value=60 * 24 * 70))
    def jump(self, minutes: int) -> None:
        self.steps["time jump"] += 1
        self._move(self.model.now + timedelta(minutes=minutes))

    @rule(offset=st.sampled_from([-1, 0]))
    def jump_to_month_end(self, offset: int) -> None:
        """To the last second of this month (-1) or the first instant of the next (0)."""
        self.steps["time jump"] += 1
        now = self.model.now
        following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        moment = following + timedelta(seconds=offset)
        if moment > now:
            self._move(moment)

    def _move(self, moment: datetime) -> None:
        self.clock.move_to(moment)
        self.model.now = moment

    # --- everything a user can observe ------------------------------------------------------

    @invariant()
    def usage_agrees(self) -> None:
        usage = get_usage(self.tenant.pk)
        assert usage.plan == self.model.plan
        for feature in FEATURES:
            observed = usage.feature(feature)
            limit = self.model.limit(feature)
            assert observed.used == self.model.used(feature), (feature, observed, self.model)
            assert observed.limit == limit, (feature, observed)
            if limit is not None:
                assert observed.remaining == max(limit - self.model.used(feature), 0)
            if feature == "api_calls" and not self.model.manual_reset:
                assert observed.period is not None
                assert observed.period.key == self.model.period(feature)
            else:
                assert observed.period is None  # never resets by itself
            checked = check_limit(self.tenant.pk, feature, 1)
            assert checked.allowed == (self.model.may_use() and self.model.fits(feature, 1))
            assert checked.used == self.model.used(feature)
        self._expect_signals([])


def test_engine_agrees_with_the_reference_model(store: StoreTarget, figures: Figures) -> None:
    QuotaMachine.plans = {code: plan_with_limits(code, **limits) for code, limits in PLANS.items()}
    QuotaMachine.steps = Counter()
    QuotaMachine.histories = [0]
    started = time.perf_counter()
    run_state_machine_as_test(QuotaMachine, settings=SETTINGS)
    figures.record(
        "model",
        store.name,
        store.database_label(),
        histories=QuotaMachine.histories[0],
        steps=sum(QuotaMachine.steps.values()),
        operations=dict(sorted(QuotaMachine.steps.items())),
        disagreements=0,
        seconds=round(time.perf_counter() - started, 1),
    )
