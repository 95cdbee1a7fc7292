"""The bad-input matrix: every malformed value gets its specific error and moves no counter.

Rows are bad values (quantities, features, tenants, idempotency keys, settings); columns are the
surfaces and their operations (``surfaces.py``: the engine today, each edge as it is added).
Before every call the tenant already has usage, so an operation that wrongly counted, refunded
or reset anything would show in the snapshot of every counter, event and alert taken around it.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from usage_limits import increment_usage, set_usage
from usage_limits.api.serializers import MAX_BATCH
from usage_limits.backends import CounterKey
from usage_limits.checks import check_settings
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidIdempotencyKey,
    InvalidQuantity,
    UnknownFeature,
    UnknownTenant,
    UsageLimitsError,
    WrongFeatureKind,
)
from usage_limits.models import Tenant, UsageAlert, UsageEvent, UsageRecord
from usage_limits.periods import current_period
from usage_limits.quantities import MAX_QUANTITY
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

from .figures import Figures
from .stores import StoreTarget
from .surfaces import CHECK, CONSUME, INCREMENT, REFUND, RESET, SET, SURFACES, Surface

# No threads here: each call runs in the test's transaction, rolled back afterwards.
pytestmark = pytest.mark.django_db

COUNTING = (CONSUME, INCREMENT, CHECK, REFUND, SET)
EVERY = (*COUNTING, RESET)  # a bad tenant or feature must not reset anything either


@dataclass(frozen=True)
class Bad:
    """One row of the matrix: what is wrong, and the error every surface must answer with.

    ``operations`` lists the operations the value is bad for (zero is a valid ``set_usage``).
    """

    name: str
    error: type[Exception]
    quantity: Any = 1
    feature: Any = "api_calls"
    tenant: Callable[[Tenant], Any] = lambda tenant: tenant
    options: tuple[tuple[str, Any], ...] = ()
    operations: tuple[str, ...] = COUNTING

    def applies_to(self, operation: str) -> bool:
        return operation in self.operations


QUANTITIES = [
    Bad("zero", InvalidQuantity, quantity=0, operations=(CONSUME, INCREMENT, CHECK, REFUND)),
    Bad("negative", InvalidQuantity, quantity=-1),
    Bad("float", InvalidQuantity, quantity=1.5),
    Bad("whole float", InvalidQuantity, quantity=1.0),
    Bad("bool", InvalidQuantity, quantity=True),
    Bad("string", InvalidQuantity, quantity="1"),
    Bad("None", InvalidQuantity, quantity=None),
    Bad("2^63", InvalidQuantity, quantity=2**63),
    Bad("2^53 (past the JSON-safe maximum)", InvalidQuantity, quantity=MAX_QUANTITY + 1),
    Bad("NaN", InvalidQuantity, quantity=math.nan),
    Bad("infinity", InvalidQuantity, quantity=math.inf),
    Bad("Decimal", InvalidQuantity, quantity=Decimal("1")),
    Bad("Decimal NaN", InvalidQuantity, quantity=Decimal("NaN")),
]
FEATURES = [
    Bad("empty feature", UnknownFeature, feature="", operations=EVERY),
    # (reset_usage(tenant, None) resets every metered feature, by design: not a bad value there)
    Bad("None feature", UnknownFeature, feature=None),
    Bad("numeric feature", UnknownFeature, feature=42, operations=EVERY),
    Bad("unknown feature", UnknownFeature, feature="nope", operations=EVERY),
    Bad("feature in the wrong case", UnknownFeature, feature="API_CALLS", operations=EVERY),
    Bad("feature with a space", UnknownFeature, feature=" api_calls", operations=EVERY),
    Bad("feature with a NUL", UnknownFeature, feature="api_calls\x00", operations=EVERY),
    Bad("oversized feature name", UnknownFeature, feature="x" * 10_000, operations=EVERY),
    Bad("feature not in the plan", FeatureNotInPlan, feature="seats", operations=EVERY),
    Bad(
        "boolean feature counted", WrongFeatureKind, feature="advanced_analytics", operations=EVERY
    ),
]
TENANTS = [
    Bad("unknown tenant id", UnknownTenant, tenant=lambda t: 2**62, operations=EVERY),
    Bad("zero tenant id", UnknownTenant, tenant=lambda t: 0, operations=EVERY),
    Bad("negative tenant id", UnknownTenant, tenant=lambda t: -1, operations=EVERY),
    Bad("tenant id 2^63", UnknownTenant, tenant=lambda t: 2**63, operations=EVERY),
    Bad("None tenant", UnknownTenant, tenant=lambda t: None, operations=EVERY),
    Bad("tenant id as a string", UnknownTenant, tenant=lambda t: str(t.pk), operations=EVERY),
    Bad("tenant id as a float", UnknownTenant, tenant=lambda t: float(t.pk), operations=EVERY),
    Bad("bool tenant", UnknownTenant, tenant=lambda t: True, operations=EVERY),
    Bad("unsaved tenant", UnknownTenant, tenant=lambda t: Tenant(name="unsaved"), operations=EVERY),
]
IDEMPOTENCY_KEYS = [
    Bad(
        f"idempotency key {label}",
        InvalidIdempotencyKey,
        options=(("idempotency_key", key),),
        operations=(CONSUME, INCREMENT),  # the operations that take one
    )
    for label, key in [("empty", ""), ("of 101 characters", "k" * 101), ("not a string", 42)]
]
MATRIX = QUANTITIES + FEATURES + TENANTS + IDEMPOTENCY_KEYS

# Filled in by the tests, read by the figures row at the end of the module.
_checked: dict[str, Counter[str]] = defaultdict(Counter)  # store name -> calls, moved


def snapshot(store: StoreTarget) -> tuple[Any, ...]:
    """Every counter row, event and alert, and whatever the store keeps outside the database."""
    counters = list(
        UsageRecord.objects.order_by("pk").values_list("pk", "tenant_id", "feature", "used")
    )
    return counters, UsageEvent.objects.count(), UsageAlert.objects.count(), store.snapshot()


@pytest.fixture
def busy_tenant(store: StoreTarget) -> Tenant:
    """A tenant with usage on its metered and allocation counters, and an alert announced."""
    plan = plan_with_limits("MATRIX", api_calls=10, projects=3, advanced_analytics=False)
    tenant: Tenant = TenantFactory(plan=plan)
    increment_usage(tenant, "api_calls", 9, idempotency_key="seed")
    set_usage(tenant, "projects", 2)
    return tenant


CELLS = [
    pytest.param(bad, operation, id=f"{operation}-{bad.name}")
    for bad in MATRIX
    for operation in EVERY
    if bad.applies_to(operation)
]


@pytest.mark.parametrize(("bad", "operation"), CELLS)
def test_bad_input_gets_its_error_and_counts_nothing(
    bad: Bad, operation: str, store: StoreTarget, surface: Surface, busy_tenant: Tenant
) -> None:
    if operation not in surface.operations:
        pytest.skip(f"the {surface.name} surface has no {operation}")
    reason = surface.inapplicable(bad.name)
    if reason is not None:
        pytest.skip(f"{bad.name} through the {surface.name}: {reason}")
    before = snapshot(store)
    with pytest.raises(bad.error) as raised:
        surface.call(
            operation, bad.tenant(busy_tenant), bad.feature, bad.quantity, **dict(bad.options)
        )
    _checked[store.name]["calls"] += 1
    assert str(raised.value), "the error must say what is wrong"
    assert isinstance(raised.value, UsageLimitsError)
    moved = snapshot(store) != before
    _checked[store.name]["moved"] += moved
    assert not moved, "a refused call changed a counter, an event or an alert"


def test_an_increment_that_would_overflow_the_counter_is_refused(
    store: StoreTarget, surface: Surface
) -> None:
    """Near 2^63 SQLite would silently turn the counter into a float; every store refuses."""
    if INCREMENT not in surface.operations:
        pytest.skip(f"the {surface.name} surface does not record usage after the fact")
    tenant = TenantFactory(plan=plan_with_limits("HUGE", api_calls=10))
    for _ in range(1024):  # 1024 x (2^53 - 1) = 2^63 - 1024: still fits
        increment_usage(tenant.pk, "api_calls", MAX_QUANTITY)
    before = snapshot(store)
    with pytest.raises(InvalidQuantity, match="overflow"):
        surface.call(INCREMENT, tenant.pk, "api_calls", MAX_QUANTITY)
    assert snapshot(store) == before
    denied = surface.call(CONSUME, tenant.pk, "api_calls", MAX_QUANTITY)
    assert not denied.admitted
    assert denied.used == 1024 * MAX_QUANTITY
    after = snapshot(store)  # (the API keeps a denied event's outcome in the ledger, by design)
    assert (after[0], after[3]) == (before[0], before[3])
    key = CounterKey(tenant.pk, "api_calls", current_period("monthly"))
    assert store.stored(key) == 1024 * MAX_QUANTITY
    store.flush()
    assert UsageRecord.objects.get(tenant=tenant).used == 1024 * MAX_QUANTITY


# --- settings: the system checks are the surface ------------------------------------------------

NAN = math.nan
PLAN_FEATURES = {
    "api_calls": {"kind": "metered"},
    "seats": {"kind": "allocation"},
    "sso": {"kind": "boolean"},
}


def with_limit(feature: str, value: Any) -> dict[str, Any]:
    limits = {"api_calls": 100, "seats": -1, "sso": False, feature: value}
    return {"FEATURES": PLAN_FEATURES, "PLANS": {"FREE": limits}}


SETTINGS = [
    ("not a dict", None, "E001"),
    ("FEATURES None", {"FEATURES": None, "PLANS": {"FREE": {"api_calls": 1}}}, "E002"),
    ("empty feature name", {"FEATURES": {"": {"kind": "metered"}}}, "E002"),
    ("limit negative", with_limit("api_calls", -2), "E007"),
    ("limit float", with_limit("api_calls", 1.5), "E007"),
    ("limit bool", with_limit("api_calls", True), "E007"),
    ("limit string", with_limit("api_calls", "100"), "E007"),
    ("limit NaN", with_limit("api_calls", NAN), "E007"),
    ("limit 2^63", with_limit("api_calls", 2**63), "E007"),
    ("boolean feature given 2", with_limit("sso", 2), "E007"),
    ("boolean feature given None", with_limit("sso", None), "E007"),
    ("empty plan code", {"PLANS": {"": {}}}, "E005"),
    ("DEFAULT_PERIOD None", {"DEFAULT_PERIOD": None}, "E004"),
    ("RESET_MODE None", {"RESET_MODE": None}, "E008"),
    ("TIME_ZONE empty", {"TIME_ZONE": ""}, "E009"),
    ("grace negative", {"PAST_DUE_GRACE_DAYS": -1}, "E010"),
    ("grace float", {"PAST_DUE_GRACE_DAYS": 1.5}, "E010"),
    ("grace bool", {"PAST_DUE_GRACE_DAYS": True}, "E010"),
    ("grace string", {"PAST_DUE_GRACE_DAYS": "7"}, "E010"),
    ("grace None", {"PAST_DUE_GRACE_DAYS": None}, "E010"),
    ("grace NaN", {"PAST_DUE_GRACE_DAYS": NAN}, "E010"),
    ("grace 2^63", {"PAST_DUE_GRACE_DAYS": 2**63}, "E010"),
    ("meter amber NaN", {"METER_THRESHOLDS": {"amber": NAN, "red": 85}}, "E011"),
    ("meter amber bool", {"METER_THRESHOLDS": {"amber": True, "red": 85}}, "E011"),
    ("meter None", {"METER_THRESHOLDS": None}, "E011"),
    ("warning zero", {"WARNING_THRESHOLDS": [0]}, "E012"),
    ("warning negative", {"WARNING_THRESHOLDS": [-5]}, "E012"),
    ("warning NaN", {"WARNING_THRESHOLDS": [NAN]}, "E012"),
    ("warning bool", {"WARNING_THRESHOLDS": [True]}, "E012"),
    ("warning 2^63", {"WARNING_THRESHOLDS": [2**63]}, "E012"),
    ("warning string", {"WARNING_THRESHOLDS": "80"}, "E012"),
    ("warning None", {"WARNING_THRESHOLDS": None}, "E012"),
    ("store None", {"STORE": None}, "E013"),
    ("store empty", {"STORE": ""}, "E013"),
    ("store not a store", {"STORE": "usage_limits.models.Plan"}, "E091"),
    ("resolver empty", {"TENANT_RESOLVER": ""}, "E013"),
    ("database alias None", {"DATABASE_ALIAS": None}, "E014"),
    ("cache alias None", {"CACHE_ALIAS": None}, "E015"),
    ("cache timeout negative", {"CACHE_TIMEOUT": -1}, "E090"),
    ("cache timeout string", {"CACHE_TIMEOUT": "300"}, "E090"),
    ("cache timeout None", {"CACHE_TIMEOUT": None}, "E090"),
    ("cache timeout float", {"CACHE_TIMEOUT": 1.5}, "E090"),
]


@pytest.mark.parametrize(
    ("setting", "expected"), [(s, e) for _, s, e in SETTINGS], ids=[name for name, _, _ in SETTINGS]
)
def test_malformed_settings_get_their_check_error(setting: Any, expected: str) -> None:
    with override_settings(USAGE_LIMITS=setting):
        found = [message.id for message in check_settings()]  # type: ignore[misc]
    assert f"usage_limits.{expected}" in found, found


def test_a_malformed_setting_stops_the_project_from_starting() -> None:
    with (
        override_settings(USAGE_LIMITS={**settings.USAGE_LIMITS, "CACHE_TIMEOUT": "300"}),
        pytest.raises(SystemCheckError, match="E090"),
    ):
        call_command("check")


# --- bodies only the REST API takes: batches, and what is not JSON ------------------------------


def _events(count: int, **bad: Any) -> list[dict[str, Any]]:
    return [
        {"feature": "api_calls", "quantity": 1, "idempotency_key": f"batch-{n}", **bad}
        for n in range(count)
    ]


API_BODIES = [
    # (name, raw body, the field in error, words of the message)
    ("oversized batch", json.dumps(_events(MAX_BATCH + 1)), "non_field_errors", "at most 1000"),
    ("empty batch", "[]", "non_field_errors", "empty"),
    ("neither an object nor an array", "42", "non_field_errors", "JSON object"),
    (
        "a batch with one bad event",
        json.dumps([*_events(3), {"feature": "api_calls", "quantity": -1, "idempotency_key": "x"}]),
        "3",
        "greater than or equal to 1",
    ),
    (
        "NaN quantity (not JSON)",
        '{"feature": "api_calls", "quantity": NaN, "idempotency_key": "k"}',
        "non_field_errors",
        "JSON parse error",
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [(body, field, words) for _, body, field, words in API_BODIES],
    ids=[name for name, _, _, _ in API_BODIES],
)
def test_the_api_refuses_a_bad_body_whole_and_counts_nothing(
    body: str, field: str, words: str, store: StoreTarget, busy_tenant: Tenant
) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=busy_tenant)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    before = snapshot(store)
    response = client.post("/api/usage/events/", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    answer = response.json()
    assert answer["success"] is False
    assert words in json.dumps(answer["errors"][field]), answer
    _checked[store.name]["calls"] += 1
    moved = snapshot(store) != before
    _checked[store.name]["moved"] += moved
    assert not moved, "a refused batch changed a counter, an event or an alert"


def test_matrix_figures(figures: Figures, store: StoreTarget) -> None:
    """Record how many refusals the matrix checked (runs last in this module)."""
    figures.record(
        "bad_input",
        store.name,
        store.database_label(),
        surfaces=len(SURFACES),
        values=len(MATRIX) + len(API_BODIES),
        refused_calls=_checked[store.name]["calls"],
        counters_moved=_checked[store.name]["moved"],
        settings_rows=len(SETTINGS),
    )
    assert _checked[store.name]["moved"] == 0
