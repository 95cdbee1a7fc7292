"""Request bodies (validated here) and response bodies (documented here, for the schema).

Request fields are strict: ``"5"`` is not a quantity and ``"true"`` is not a boolean, because a
client that sends strings where numbers belong has a bug that a lenient parser would hide.
Responses are built by the views from the engine's results; the serializers below describe them
in the OpenAPI schema and the tests check every response against that schema.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from usage_limits.events import MAX_IDEMPOTENCY_KEY_LENGTH
from usage_limits.models import UNLIMITED, FeatureKind, PeriodName, ResetMode
from usage_limits.quantities import MAX_QUANTITY
from usage_limits.results import DenialReason

MAX_BATCH = 1000
MAX_METADATA_BYTES = 4096
# Nesting every database stores: MariaDB's JSON check refuses 32 levels (a 500 before).
MAX_METADATA_DEPTH = 20
MAX_FEATURE_LENGTH = 64

LEVELS = ("ok", "amber", "red")
DENIAL_REASONS = [reason.value for reason in DenialReason]


# --- strict fields ---------------------------------------------------------------------------


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "A whole number is required (not a string or a float)."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        value: int = super().to_internal_value(data)
        return value


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "A string is required."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value: str = super().to_internal_value(data)
        return value


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "true or false is required."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 timestamp with its UTC offset: a naive one would be read in a guessed zone."""

    default_error_messages = {
        "naive": "The timestamp needs a UTC offset, e.g. 2026-03-01T12:00:00Z.",
        "not_a_string": "An ISO 8601 timestamp string is required.",
    }

    def to_internal_value(self, value: Any) -> datetime:
        if not isinstance(value, str):
            self.fail("not_a_string")
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            self.fail("naive")
        result: datetime = super().to_internal_value(value)
        return result


class MetadataField(serializers.DictField):
    """Free-form JSON kept with the event (for your own reconciliation), at most 4 KiB."""

    default_error_messages = {
        "too_large": f"Metadata is at most {MAX_METADATA_BYTES} bytes of JSON.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value: dict[str, Any] = super().to_internal_value(data)
        problem = metadata_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


def storable_text(text: str) -> bool:
    """Whether every database can store ``text``: no NUL (PostgreSQL refuses it in text and
    JSON) and no lone surrogate (not UTF-8 at all)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")  # refuses lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def metadata_problem(metadata: Any) -> str:
    """Why ``metadata`` cannot be kept with an event ("" when it can)."""
    # Walked without recursion: the depth is what is being checked.
    pending: list[tuple[Any, int]] = [(metadata, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_METADATA_DEPTH:
            return f"Metadata is nested at most {MAX_METADATA_DEPTH} levels deep."
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or not storable_text(key):
                    return "Metadata keys are strings without NUL or lone surrogate characters."
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not storable_text(value):
            return "Metadata strings have no NUL or lone surrogate characters."
    if len(json.dumps(metadata, default=str).encode()) > MAX_METADATA_BYTES:
        return f"Metadata is at most {MAX_METADATA_BYTES} bytes of JSON."
    return ""


# --- requests ----------------------------------------------------------------------------------


class UsageEventSerializer(serializers.Serializer[Any]):
    # Not trimmed: " api_calls" is not a feature name (the engine refuses it too).
    feature = StrictCharField(
        max_length=MAX_FEATURE_LENGTH, trim_whitespace=False, help_text="e.g. api_calls"
    )
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    idempotency_key = StrictCharField(
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        trim_whitespace=False,  # a key is opaque: "abc " and "abc" are two keys
        help_text="Unique per tenant: a repeated key counts once and answers with the original "
        "result.",
    )
    timestamp = AwareDateTimeField(
        required=False,
        help_text="When the usage happened (default: now). Not in the future, not before the "
        "current period.",
    )
    metadata = MetadataField(required=False)
    enforce = StrictBooleanField(
        required=False,
        default=False,
        help_text="Count only if it fits within the limit (as consume()); denied events are "
        "reported, not counted.",
    )


class UsageResetSerializer(serializers.Serializer[Any]):
    tenant = serializers.CharField(max_length=100, help_text="The tenant's slug or id.")
    feature = StrictCharField(
        max_length=MAX_FEATURE_LENGTH,
        required=False,
        help_text="Reset only this feature (default: every metered feature).",
    )
    reason = StrictCharField(max_length=2000, help_text="Why: kept in the audit trail.")


class UsageLimitsSerializer(serializers.Serializer[Any]):
    tenant = serializers.CharField(max_length=100, help_text="The tenant's slug or id.")
    limits = serializers.DictField(
        child=StrictIntegerField(min_value=UNLIMITED, max_value=MAX_QUANTITY, allow_null=True),
        required=False,
        help_text='Per-feature overrides, e.g. {"api_calls": 10000}: -1 unlimited, null removes '
        "the override (the plan's limit applies again).",
    )
    reset_mode = serializers.ChoiceField(
        choices=[*ResetMode.values, ""],
        required=False,
        help_text='How periods close for this tenant; "" follows the USAGE_LIMITS setting.',
    )
    reset_period = serializers.ChoiceField(
        choices=[*PeriodName.values, ""],
        required=False,
        help_text='How often this tenant\'s metered counters start again; "" follows the plan.',
    )
    reason = StrictCharField(max_length=2000, required=False, allow_blank=True)


# --- responses ---------------------------------------------------------------------------------
# Fields named ``data`` and ``errors`` shadow Serializer properties for the type checker only:
# DRF's metaclass moves declared fields out of the class, and these classes only document shapes.


class TenantSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()


class FeatureUsageSerializer(serializers.Serializer[Any]):
    feature = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    kind = serializers.ChoiceField(choices=FeatureKind.values)
    current = serializers.IntegerField()
    limit = serializers.IntegerField(help_text="-1: unlimited.")
    remaining = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    percent = serializers.FloatField()
    level = serializers.ChoiceField(choices=LEVELS)
    unlimited = serializers.BooleanField()
    included = serializers.BooleanField()
    resets_at = serializers.DateTimeField(allow_null=True)


class EstimateLineSerializer(serializers.Serializer[Any]):
    feature = serializers.CharField()
    unit_name = serializers.CharField()
    used = serializers.IntegerField()
    included = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    overage = serializers.IntegerField()
    unit_price = serializers.CharField(help_text='A decimal as a string, e.g. "0.001".')
    amount = serializers.CharField(help_text='A decimal as a string, e.g. "1.25".')
    currency = serializers.CharField()
    period_end = serializers.DateTimeField(allow_null=True)


class EstimateSerializer(serializers.Serializer[Any]):
    currency = serializers.CharField()
    total = serializers.CharField(help_text="A decimal as a string: money is never a float.")
    lines = EstimateLineSerializer(many=True)


class UsageSerializer(serializers.Serializer[Any]):
    tenant = TenantSerializer()
    plan = serializers.CharField()
    plan_name = serializers.CharField()
    subscription_status = serializers.CharField()
    features = FeatureUsageSerializer(many=True)
    estimate = EstimateSerializer(
        allow_null=True, help_text="The current period's overage estimate; null without pricing."
    )


class UsageResponseSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    data = UsageSerializer()  # type: ignore[assignment]


class HistoryItemSerializer(serializers.Serializer[Any]):
    feature = serializers.CharField()
    granularity = serializers.ChoiceField(choices=["period", "day"])
    period = serializers.CharField(help_text='The period\'s key, e.g. "2026-03".')
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(allow_null=True)
    used = serializers.IntegerField()
    current = serializers.BooleanField(help_text="The period being counted now.")


class HistoryPageSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = HistoryItemSerializer(many=True)


class HistoryResponseSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    data = HistoryPageSerializer()  # type: ignore[assignment]


class EventResultSerializer(serializers.Serializer[Any]):
    idempotency_key = serializers.CharField()
    feature = serializers.CharField()
    quantity = serializers.IntegerField()
    accepted = serializers.BooleanField(help_text="Counted (or, for a replay, counted before).")
    replayed = serializers.BooleanField(help_text="The key was seen before: nothing was counted.")
    reason = serializers.ChoiceField(choices=DENIAL_REASONS, allow_null=True)
    used = serializers.IntegerField()
    limit = serializers.IntegerField(help_text="-1: unlimited.")
    remaining = serializers.IntegerField(allow_null=True)
    period = serializers.CharField()
    resets_at = serializers.DateTimeField(allow_null=True)


class EventResponseSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    data = EventResultSerializer()  # type: ignore[assignment]


class EventBatchSerializer(serializers.Serializer[Any]):
    counted = serializers.IntegerField(help_text="Events counted now.")
    replayed = serializers.IntegerField(help_text="Events whose key was seen before.")
    denied = serializers.IntegerField(help_text="Enforced events refused (nothing counted).")
    results = EventResultSerializer(many=True)


class EventBatchResponseSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    data = EventBatchSerializer()  # type: ignore[assignment]


class ResetItemSerializer(serializers.Serializer[Any]):
    feature = serializers.CharField()
    period = serializers.CharField()
    value_before = serializers.IntegerField()
    reset_id = serializers.IntegerField(help_text="The audit row (UsageReset).")


class ResetSerializer(serializers.Serializer[Any]):
    tenant = TenantSerializer()
    resets = ResetItemSerializer(many=True)


class ResetResponseSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    data = ResetSerializer()  # type: ignore[assignment]


class ErrorSerializer(serializers.Serializer[Any]):
    success = serializers.BooleanField()
    error = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text="400 only: field name (or an event's index in a batch) -> messages.",
    )


class DenialSerializer(serializers.Serializer[Any]):
    """The body of a 429 (quota) or 402 (subscription), shared by every edge of the app."""

    success = serializers.BooleanField()
    error = serializers.CharField()
    code = serializers.ChoiceField(choices=DENIAL_REASONS)
    feature = serializers.CharField()
    plan = serializers.CharField()
    limit = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField()
    requested = serializers.IntegerField()
    resets_at = serializers.DateTimeField(allow_null=True)
    upgrade_url = serializers.CharField(allow_null=True)


# --- the events fast path ----------------------------------------------------------------------

_EVENT_FIELDS = frozenset(
    {"feature", "quantity", "idempotency_key", "timestamp", "metadata", "enforce"}
)


def parse_events_quickly(items: list[Any]) -> list[dict[str, Any]] | None:
    """The validated fields of every event, or ``None`` to let :class:`UsageEventSerializer`
    judge the batch (and word its errors).

    DRF's field machinery costs about 0.1 ms an event, most of a 1,000-event request. This accepts
    only what the serializer accepts, in plain Python; anything it is unsure of (a timestamp, a
    value out of range, an unknown field) sends the whole batch through the serializer, so the
    serializer stays the single definition of a valid event (the tests hold the two together).
    """
    parsed = []
    for item in items:
        if type(item) is not dict or not _EVENT_FIELDS.issuperset(item):
            return None
        feature = item.get("feature")
        quantity = item.get("quantity")
        key = item.get("idempotency_key")
        enforce = item.get("enforce", False)
        if (
            type(feature) is not str
            or not 0 < len(feature.strip()) == len(feature) <= MAX_FEATURE_LENGTH
            or type(quantity) is not int
            or not 0 < quantity <= MAX_QUANTITY
            or not storable_text(feature)
            or type(key) is not str
            or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
            or not storable_text(key)
            or type(enforce) is not bool
            or "timestamp" in item
        ):
            return None
        fields: dict[str, Any] = {
            "feature": feature,
            "quantity": quantity,
            "idempotency_key": key,
            "enforce": enforce,
        }
        if "metadata" in item:
            metadata = item["metadata"]
            if type(metadata) is not dict or metadata_problem(metadata):
                return None
            fields["metadata"] = metadata
        parsed.append(fields)
    return parsed
