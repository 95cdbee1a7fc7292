"""POST /api/usage/events/: recording usage from other services, once per idempotency key."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from usage_limits import consume, get_usage
from usage_limits.api.serializers import UsageEventSerializer, parse_events_quickly
from usage_limits.ledger import COLUMNS as LEDGER_COLUMNS
from usage_limits.models import SubscriptionStatus, Tenant, UsageEvent
from usage_limits.testing.factories import MembershipFactory, TenantFactory, plan_with_limits

from .api_support import assert_matches_schema, member_client, token_client
from .concurrency import run_in_threads

EVENTS = "/api/usage/events/"


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


def event(key: str = "e1", quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"feature": "api_calls", "quantity": quantity, "idempotency_key": key, **extra}


def post(client: APIClient, body: Any, **headers: Any) -> Any:
    return client.post(EVENTS, body, format="json", **headers)


@pytest.mark.django_db
def test_one_event_is_counted_and_answered_with_201(tenant: Tenant) -> None:
    response = post(member_client(tenant), event("a", 3, metadata={"request": "r-1"}))
    assert response.status_code == 201
    data = assert_matches_schema(response, EVENTS, "post")["data"]
    assert data["used"] == 3
    assert data["remaining"] == 97
    assert (data["accepted"], data["replayed"], data["reason"]) == (True, False, None)
    assert response["RateLimit"].endswith(f"r=97;t={response['RateLimit'].split('t=')[1]}")
    assert used(tenant) == 3
    assert UsageEvent.objects.get(idempotency_key="a").metadata == {"request": "r-1"}


@pytest.mark.django_db
def test_a_repeated_key_counts_once_and_answers_with_the_original_result(tenant: Tenant) -> None:
    client = member_client(tenant)
    first = post(client, event("same", 5))
    post(client, event("other", 1))
    again = post(client, event("same", 5))
    assert again.status_code == 200
    replay = assert_matches_schema(again, EVENTS, "post")["data"]
    assert replay["replayed"] is True
    assert replay["used"] == first.json()["data"]["used"] == 5
    assert used(tenant) == 6


@pytest.mark.django_db
def test_a_batch_is_answered_per_event_in_order(tenant: Tenant) -> None:
    client = member_client(tenant)
    post(client, event("seen", 2))
    batch = [event("b1", 1), event("seen", 2), event("b2", 4), event("b1", 1)]
    response = post(client, batch)
    assert response.status_code == 200
    data = assert_matches_schema(response, EVENTS, "post")["data"]
    assert (data["counted"], data["replayed"], data["denied"]) == (2, 2, 0)
    assert [r["idempotency_key"] for r in data["results"]] == ["b1", "seen", "b2", "b1"]
    assert [r["replayed"] for r in data["results"]] == [False, True, False, True]
    assert used(tenant) == 7


@pytest.mark.django_db
def test_an_enforced_event_that_does_not_fit_gets_429_with_the_denial_body(
    tenant: Tenant,
) -> None:
    consume(tenant, "api_calls", 99)
    client = member_client(tenant)
    response = post(client, event("big", 2, enforce=True))
    assert response.status_code == 429
    body = assert_matches_schema(response, EVENTS, "post")
    assert body["success"] is False
    assert (body["code"], body["used"], body["limit"], body["requested"]) == (
        "quota_exceeded",
        99,
        100,
        2,
    )
    assert int(response["Retry-After"]) > 0
    assert response["RateLimit-Policy"].startswith('"free-api_calls";q=100')
    assert used(tenant) == 99
    assert post(client, event("big", 2, enforce=True)).status_code == 429  # the same answer
    assert post(client, event("small", 1, enforce=True)).status_code == 201


@pytest.mark.django_db
def test_enforced_events_in_a_batch_report_denials_per_event(tenant: Tenant) -> None:
    consume(tenant, "api_calls", 95)
    batch = [event(f"k{i}", 2, enforce=True) for i in range(4)]
    data = post(member_client(tenant), batch).json()["data"]
    assert [r["accepted"] for r in data["results"]] == [True, True, False, False]
    assert [r["reason"] for r in data["results"]][2:] == ["quota_exceeded"] * 2
    assert (data["counted"], data["denied"]) == (2, 2)
    assert used(tenant) == 99


@pytest.mark.django_db
def test_a_canceled_subscription_gets_402_for_enforced_events(tenant: Tenant) -> None:
    tenant.subscription_status = SubscriptionStatus.CANCELED
    tenant.save()
    response = post(member_client(tenant), event("x", 1, enforce=True))
    assert response.status_code == 402
    assert assert_matches_schema(response, EVENTS, "post")["code"] == "subscription_inactive"


@pytest.mark.django_db
def test_an_event_from_earlier_in_this_period_keeps_its_timestamp(tenant: Tenant) -> None:
    period = get_usage(tenant).feature("api_calls").period
    assert period is not None
    moment = max(period.start, timezone.now() - dt.timedelta(minutes=1)).replace(microsecond=0)
    response = post(member_client(tenant), event("t", 1, timestamp=moment.isoformat()))
    assert response.status_code == 201
    assert UsageEvent.objects.get(idempotency_key="t").timestamp == moment


def _now_plus(**delta: float) -> str:
    return (timezone.now() + dt.timedelta(**delta)).isoformat()


BAD_EVENTS = [
    pytest.param({"quantity": "5"}, "quantity", id="quantity-as-string"),
    pytest.param({"quantity": 1.5}, "quantity", id="quantity-float"),
    pytest.param({"quantity": True}, "quantity", id="quantity-bool"),
    pytest.param({"quantity": 0}, "quantity", id="quantity-zero"),
    pytest.param({"quantity": -3}, "quantity", id="quantity-negative"),
    pytest.param({"quantity": 2**53}, "quantity", id="quantity-too-large"),
    pytest.param({"feature": 7}, "feature", id="feature-not-a-string"),
    pytest.param({"feature": "nope"}, "feature", id="unknown-feature"),
    pytest.param({"feature": "advanced_analytics"}, "feature", id="boolean-feature"),
    pytest.param({"idempotency_key": None}, "idempotency_key", id="key-null"),
    pytest.param({"idempotency_key": "k" * 101}, "idempotency_key", id="key-too-long"),
    pytest.param({"idempotency_key": ""}, "idempotency_key", id="key-blank"),
    pytest.param({"enforce": "yes"}, "enforce", id="enforce-not-a-bool"),
    pytest.param({"timestamp": "yesterday"}, "timestamp", id="timestamp-garbage"),
    pytest.param({"timestamp": "2026-01-01T00:00:00"}, "timestamp", id="timestamp-naive"),
    pytest.param({"timestamp": _now_plus(hours=2)}, "timestamp", id="timestamp-future"),
    pytest.param({"timestamp": _now_plus(days=-45)}, "timestamp", id="timestamp-old-period"),
    pytest.param({"metadata": ["a"]}, "metadata", id="metadata-not-an-object"),
    pytest.param({"metadata": {"x": "y" * 5000}}, "metadata", id="metadata-too-large"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), BAD_EVENTS)
def test_a_malformed_event_is_a_400_field_error_and_counts_nothing(
    tenant: Tenant, change: dict[str, Any], field: str
) -> None:
    response = post(member_client(tenant), {**event("bad"), **change})
    assert response.status_code == 400
    body = assert_matches_schema(response, EVENTS, "post")
    assert (body["success"], body["code"]) == (False, "invalid")
    assert list(body["errors"]) == [field]
    assert used(tenant) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("missing", ["feature", "quantity", "idempotency_key"])
def test_required_fields(tenant: Tenant, missing: str) -> None:
    body = event()
    del body[missing]
    response = post(member_client(tenant), body)
    assert response.status_code == 400
    assert missing in response.json()["errors"]


@pytest.mark.django_db
def test_a_batch_with_one_bad_event_names_it_by_index_and_counts_nothing(tenant: Tenant) -> None:
    batch = [event("a"), event("b", 0), event("c"), event("d", feature="nope")]
    response = post(member_client(tenant), batch)
    assert response.status_code == 400
    errors = assert_matches_schema(response, EVENTS, "post")["errors"]
    assert sorted(errors) == ["1", "3"]
    assert "quantity" in errors["1"]
    assert "feature" in errors["3"]
    assert used(tenant) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "empty"),
        ("just a string", "JSON object"),
        (42, "JSON object"),
        (None, "JSON object"),
    ],
)
def test_bodies_that_are_not_events(tenant: Tenant, body: Any, fragment: str) -> None:
    response = member_client(tenant).post(EVENTS, json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert (
        fragment in assert_matches_schema(response, EVENTS, "post")["errors"]["non_field_errors"][0]
    )


@pytest.mark.django_db
def test_an_oversized_batch_is_refused_whole(tenant: Tenant) -> None:
    batch = [event(f"k{i}") for i in range(1001)]
    response = post(member_client(tenant), batch)
    assert response.status_code == 400
    assert "at most 1000" in response.json()["errors"]["non_field_errors"][0]
    assert used(tenant) == 0
    assert post(member_client(tenant), batch[:1000]).status_code == 200
    assert used(tenant) == 1000


@pytest.mark.django_db
def test_bad_json_is_a_400_parse_error(tenant: Tenant) -> None:
    response = member_client(tenant).post(
        EVENTS, '{"feature": "api_calls",', content_type="application/json"
    )
    assert response.status_code == 400
    body = assert_matches_schema(response, EVENTS, "post")
    assert body["code"] == "parse_error"
    assert body["errors"]["non_field_errors"]


@pytest.mark.django_db
def test_a_form_body_is_refused_with_415(tenant: Tenant) -> None:
    response = member_client(tenant).post(EVENTS, {"feature": "api_calls"})
    assert response.status_code == 415
    assert assert_matches_schema(response, EVENTS, "post")["code"] == "unsupported_media_type"


@pytest.mark.django_db
def test_anonymous_and_tenantless_callers_record_nothing(tenant: Tenant) -> None:
    assert post(APIClient(), event()).status_code == 401
    foreign = TenantFactory(plan=tenant.plan)
    response = post(member_client(tenant), event(), HTTP_X_TENANT=foreign.slug)
    assert response.status_code == 403
    assert used(foreign) == 0
    assert used(tenant) == 0


@pytest.mark.django_db
def test_keys_belong_to_a_tenant_and_reveal_nothing_across_tenants(tenant: Tenant) -> None:
    other = TenantFactory(plan=tenant.plan)
    post(member_client(other), event("shared", 40))
    mine = post(member_client(tenant), event("shared", 1))
    assert mine.status_code == 201
    assert mine.json()["data"]["used"] == 1
    assert (used(tenant), used(other)) == (1, 40)


@pytest.mark.django_db(transaction=True)
def test_the_same_key_sent_fifty_times_at_once_counts_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("RACE", api_calls=1000))
    user = MembershipFactory(tenant=tenant).user
    clients = [token_client(user) for _ in range(50)]

    def send(index: int) -> tuple[int, int]:
        response = post(clients[index], event("only-once", 3))
        return response.status_code, response.json()["data"]["used"]

    results = run_in_threads(50, send)
    assert sorted(code for code, _ in results) == [200] * 49 + [201]
    assert {value for _, value in results} == {3}
    assert used(tenant) == 3
    assert UsageEvent.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_sharing_keys_count_each_key_once() -> None:
    tenant = TenantFactory(plan=plan_with_limits("RACE2", api_calls=None))
    user = MembershipFactory(tenant=tenant).user
    clients = [token_client(user) for _ in range(6)]
    batch = [event(f"shared-{i:03d}") for i in range(200)]

    def send(index: int) -> int:
        own = [event(f"own-{index}-{i}") for i in range(10)]
        ordered = batch if index % 2 else batch[::-1]
        response = post(clients[index], own + ordered)
        assert response.status_code == 200
        return int(response.json()["data"]["counted"])

    counted = run_in_threads(6, send)
    assert sum(counted) == 200 + 60
    assert used(tenant) == 260


# --- the fast path accepts only what the serializer accepts -----------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=2**54),
    st.floats(allow_nan=False),
    st.text(max_size=110),
    st.sampled_from(["api_calls", " api_calls", "k", "2026-03-01T00:00:00Z"]),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.lists(st.integers(), max_size=2),
)
_event_dicts = st.dictionaries(
    st.sampled_from(
        ["feature", "quantity", "idempotency_key", "timestamp", "metadata", "enforce", "extra"]
    ),
    _values,
)


@given(item=st.one_of(_event_dicts, _values))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_never_accepts_what_the_serializer_refuses(item: Any) -> None:
    quick = parse_events_quickly([item])
    if quick is None:
        return
    serializer = UsageEventSerializer(data=[item], many=True)
    assert serializer.is_valid(), serializer.errors
    assert [dict(fields) for fields in serializer.validated_data] == quick


# An unknown feature or a feature outside the plan is well-formed: the engine refuses those.
MALFORMED = [p for p in BAD_EVENTS if p.id not in {"unknown-feature", "boolean-feature"}]


@pytest.mark.parametrize(("change", "field"), MALFORMED)
def test_the_fast_path_defers_every_malformed_event(change: dict[str, Any], field: str) -> None:
    assert parse_events_quickly([{**event("bad"), **change}]) is None


def test_the_fast_path_takes_plain_events() -> None:
    items = [event("a", 2), event("b", 1, enforce=True, metadata={"job": 7})]
    assert parse_events_quickly(items) == [
        {"feature": "api_calls", "quantity": 2, "idempotency_key": "a", "enforce": False},
        {
            "feature": "api_calls",
            "quantity": 1,
            "idempotency_key": "b",
            "enforce": True,
            "metadata": {"job": 7},
        },
    ]


@pytest.mark.django_db
def test_a_batch_of_a_thousand_costs_a_fixed_number_of_queries(
    django_assert_max_num_queries: Any, vendor: str
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("ROOMY", api_calls=10**9))
    client = member_client(tenant)
    post(client, event("warm"))
    batch = [event(f"q{i}") for i in range(1000)]
    # token, membership, the rules version, savepoint, known keys, the counter, the ledger
    # insert, release; SQLite splits the key lookup (2 queries) and the insert (999 // columns
    # rows a statement) by its 999-parameter cap; the day's history bucket is one more statement
    # except on PostgreSQL
    history = 0 if vendor == "postgresql" else 1
    inserts = math.ceil(1000 / (999 // len(LEDGER_COLUMNS)))
    expected = 8 + history if vendor != "sqlite" else 6 + 2 + inserts + history
    with django_assert_max_num_queries(expected):
        assert post(client, batch).status_code == 200
    assert used(tenant) == 1001


@pytest.mark.django_db
def test_idempotency_keys_are_exact_case_whitespace_and_all(tenant: Tenant) -> None:
    client = member_client(tenant)
    post(client, event("abc", 1))
    assert post(client, event("abc ", 1)).status_code == 201
    assert post(client, event("ABC", 1)).status_code == 201
    assert post(client, [event(" abc", 1), event("Abc", 1)]).json()["data"]["counted"] == 2
    assert used(tenant) == 5
    assert post(client, event("ABC", 1)).json()["data"]["replayed"] is True


@pytest.mark.django_db(transaction=True)
def test_concurrent_enforced_events_admit_exactly_the_limit() -> None:
    tenant = TenantFactory(plan=plan_with_limits("TIGHT", api_calls=25))
    user = MembershipFactory(tenant=tenant).user
    clients = [token_client(user) for _ in range(8)]

    def send(index: int) -> tuple[int, int]:
        single = post(clients[index], event(f"one-{index}", 1, enforce=True))
        batch = [event(f"b-{index}-{i}", 1, enforce=True) for i in range(5)]
        counted = post(clients[index], batch).json()["data"]["counted"]
        return int(single.status_code == 201), int(counted)

    results = run_in_threads(8, send)
    assert sum(single + counted for single, counted in results) == 25
    assert used(tenant) == 25
    assert UsageEvent.objects.filter(tenant=tenant, accepted=True).count() == 25


@pytest.mark.django_db
def test_a_body_nested_past_the_json_parser_is_a_400_in_the_api_shape(tenant: Tenant) -> None:
    """Seen before: 100,000 nested brackets (200 KB) raised RecursionError, a 500."""
    client = member_client(tenant)
    body = "[" * 100_000 + "]" * 100_000
    response = client.generic("POST", EVENTS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert used(tenant) == 0


@pytest.mark.django_db
def test_a_body_over_the_sites_upload_limit_is_a_413_in_the_api_shape(
    tenant: Tenant, settings: Any
) -> None:
    """Seen before: Django's HTML 400 page from the JSON API."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = member_client(tenant)
    response = post(client, event("big", metadata={"pad": "x" * 2000}))
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "payload_too_large"
    assert used(tenant) == 0


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
        ({"idempotency_key": "k\ud800"}, "idempotency_key"),
        ({"metadata": {"note": "a\x00b"}}, "metadata"),
        ({"metadata": {"\udfff": 1}}, "metadata"),
        ({"metadata": {"list": ["ok", "\ud83d"]}}, "metadata"),
        ({"metadata": nested(900)}, "metadata"),
        ({"metadata": nested(21)}, "metadata"),
    ],
)
def test_what_a_database_cannot_store_is_a_400_on_both_paths(
    tenant: Tenant, fields: dict[str, Any], field: str
) -> None:
    """Seen before: the fast path took NUL characters, lone surrogates and 900-level metadata
    that the serializer refuses, and PostgreSQL (or MariaDB) answered 500."""
    client = member_client(tenant)

    def send(body: Any) -> Any:  # JSON escapes: a lone surrogate has no UTF-8 form to send
        return client.generic("POST", EVENTS, json.dumps(body), content_type="application/json")

    single = send({**event("k"), **fields})
    batch = send([event("other"), {**event("k"), **fields}])
    assert (single.status_code, batch.status_code) == (400, 400)
    assert field in single.json()["errors"]
    assert field in batch.json()["errors"]["1"]
    assert used(tenant) == 0


@pytest.mark.django_db
def test_metadata_20_levels_deep_is_kept(tenant: Tenant) -> None:
    response = post(member_client(tenant), event("deep", metadata=nested(20)))
    assert response.status_code == 201


@pytest.mark.django_db
def test_a_key_reused_in_one_batch_with_another_quantity_is_a_409_and_counts_nothing(
    tenant: Tenant,
) -> None:
    """Seen before: ``[a:2, b:1, a:5]`` answered the ``a:5`` event as a replay of ``a:2``."""
    response = post(member_client(tenant), [event("a", 2), event("b", 1), event("a", 5)])
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "idempotency_key_reused"
    assert list(body["errors"]) == ["2"]
    assert "quantity 2, not 5" in body["errors"]["2"]["idempotency_key"][0]
    assert used(tenant) == 0


@pytest.mark.django_db
def test_a_key_sent_again_with_another_body_is_a_409_and_an_identical_retry_replays(
    tenant: Tenant,
) -> None:
    client = member_client(tenant)
    assert post(client, event("a", 2)).status_code == 201
    other_quantity = post(client, event("a", 5))
    other_feature = post(client, {**event("a", 2), "feature": "projects"})
    batch = post(client, [event("c", 1), event("a", 3)])
    assert [r.status_code for r in (other_quantity, other_feature, batch)] == [409, 409, 409]
    assert "idempotency_key" in other_quantity.json()["errors"]
    assert list(batch.json()["errors"]) == ["1"]
    retry = post(client, event("a", 2))
    assert (retry.status_code, retry.json()["data"]["replayed"]) == (200, True)
    assert used(tenant) == 2
