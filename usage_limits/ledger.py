"""Writing usage events to the ledger (:class:`~usage_limits.models.UsageEvent`) in bulk.

A batch of events becomes one ``INSERT``: on PostgreSQL an ``INSERT ... SELECT`` from
``json_to_recordset()`` over one JSON parameter, elsewhere a multi-row ``VALUES`` (split only
where the database caps the number of parameters: 999 on SQLite). ``QuerySet.bulk_create``
prepares every value of every row through the field machinery; for the 1,000-event batches of
the events API that was most of the request's time. Values are adapted as the ORM adapts them
(``adapt_datetimefield_value``, the JSON field's ``get_db_prep_save``, ISO 8601 in the JSON
document), so the rows read back alike.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import BigIntegerField, BooleanField, Case, CharField, Field, Value, When
from django.utils import timezone

from usage_limits.models import UsageEvent

COLUMNS = (
    "tenant_id",
    "feature",
    "quantity",
    "idempotency_key",
    "timestamp",
    "period_key",
    "accepted",
    "used_after",
    "metadata",
    "report_state",
    "attempts",
    "last_error",
    "report_identifier",
    "claimed_by",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    tenant_id: int
    feature: str
    quantity: int
    idempotency_key: str | None
    timestamp: datetime
    period_key: str
    accepted: bool
    used_after: int
    metadata: dict[str, Any]
    # pending for accepted events of a feature with a Stripe meter (the reporter sends them)
    report_state: str = UsageEvent.ReportState.NOT_REPORTED.value


# PostgreSQL: the rows travel as one JSON document expanded by json_to_recordset(), so the
# statement text is the same whatever the batch size (a 1,000-row VALUES list has 13,000
# placeholders for psycopg to parse) and no value is adapted one by one in Python.
_POSTGRES_RECORD = (
    "tenant_id bigint, feature varchar, quantity bigint, idempotency_key varchar, "
    "timestamp timestamptz, period_key varchar, accepted boolean, used_after bigint, "
    "metadata jsonb, report_state varchar"
)


@dataclass(frozen=True, slots=True)
class KnownEvent:
    """What a replay needs of an event recorded before: its outcome the first time."""

    feature: str
    quantity: int
    accepted: bool
    used_after: int | None


def known_events(alias: str, tenant_id: int, keys: Collection[str]) -> dict[str, KnownEvent]:
    """The tenant's events already recorded under any of ``keys``, by key (one query).

    A plain cursor rather than the ORM: this runs on every batch, usually to find nothing, and
    building the query was a good share of a small batch's cost.
    """
    if not keys:
        return {}
    connection = connections[alias]
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    select = f"SELECT idempotency_key, feature, quantity, accepted, used_after FROM {table} "
    keys = list(keys)
    rows: list[Any] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"{select}WHERE tenant_id = %s AND idempotency_key = ANY(%s)", [tenant_id, keys]
            )
            rows += cursor.fetchall()
        else:
            max_params = connection.features.max_query_params
            per_query = len(keys) if max_params is None else max_params - 1
            for first in range(0, len(keys), per_query):
                chunk = keys[first : first + per_query]
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"{select}WHERE tenant_id = %s AND idempotency_key IN ({marks})",
                    [tenant_id, *chunk],
                )
                rows += cursor.fetchall()
    return {
        str(key): KnownEvent(
            str(feature), int(quantity), bool(accepted), None if after is None else int(after)
        )
        for key, feature, quantity, accepted, after in rows
    }


def insert_events(alias: str, rows: Sequence[LedgerRow]) -> None:
    """Insert ``rows`` in as few statements as the database allows (in the caller's transaction).

    A duplicate idempotency key raises ``IntegrityError``, as ``bulk_create`` would.
    """
    if not rows:
        return
    connection = connections[alias]
    if connection.vendor == "postgresql":
        _insert_json(connection, rows)
        return
    ops = connection.ops
    metadata_field = UsageEvent._meta.get_field("metadata")
    table = ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in COLUMNS)
    one_row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    now = ops.adapt_datetimefield_value(timezone.now())
    max_params = connection.features.max_query_params
    per_statement = len(rows) if max_params is None else max(1, max_params // len(COLUMNS))
    with connection.cursor() as cursor:
        for first in range(0, len(rows), per_statement):
            chunk = rows[first : first + per_statement]
            params: list[Any] = []
            for row in chunk:
                params += (
                    row.tenant_id,
                    row.feature,
                    row.quantity,
                    row.idempotency_key,
                    ops.adapt_datetimefield_value(row.timestamp),
                    row.period_key,
                    row.accepted,
                    row.used_after,
                    metadata_field.get_db_prep_save(row.metadata, connection),
                    row.report_state,
                    0,
                    "",
                    "",
                    "",
                    now,
                )
            values = ", ".join([one_row] * len(chunk))
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {values}", params)


def record_outcomes(alias: str, tenant_id: int, outcomes: Sequence[LedgerRow]) -> None:
    """Write the outcomes (``accepted``, ``used_after``, ``report_state``) of events whose rows
    :func:`insert_events` wrote earlier in the transaction, to claim their keys before counting.

    One ``UPDATE`` per chunk of keys (each key costs 7 parameters), through the ORM.
    """
    if not outcomes:
        return
    max_params = connections[alias].features.max_query_params
    per_statement = len(outcomes) if max_params is None else max(1, (max_params - 1) // 7)
    for first in range(0, len(outcomes), per_statement):
        chunk = outcomes[first : first + per_statement]

        def each(field: str, output: Field[Any, Any], chunk: Sequence[LedgerRow] = chunk) -> Any:
            values = {getattr(row, field) for row in chunk}
            if len(values) == 1:
                return Value(values.pop(), output_field=output)
            return Case(
                *[
                    When(idempotency_key=row.idempotency_key, then=Value(getattr(row, field)))
                    for row in chunk
                ],
                output_field=output,
            )

        UsageEvent.objects.using(alias).filter(
            tenant_id=tenant_id, idempotency_key__in=[row.idempotency_key for row in chunk]
        ).update(
            accepted=each("accepted", BooleanField()),
            used_after=each("used_after", BigIntegerField()),
            report_state=each("report_state", CharField()),
        )


def _insert_json(connection: Any, rows: Sequence[LedgerRow]) -> None:
    ops = connection.ops
    table = ops.quote_name(UsageEvent._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in COLUMNS)
    selected = ", ".join(ops.quote_name(c) for c in COLUMNS[:10])
    document = json.dumps(
        [
            {
                "tenant_id": row.tenant_id,
                "feature": row.feature,
                "quantity": row.quantity,
                "idempotency_key": row.idempotency_key,
                "timestamp": row.timestamp.isoformat(),
                "period_key": row.period_key,
                "accepted": row.accepted,
                "used_after": row.used_after,
                "metadata": row.metadata,
                "report_state": row.report_state,
            }
            for row in rows
        ],
        cls=DjangoJSONEncoder,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) "
            f"SELECT {selected}, 0, '', '', '', %s "
            f"FROM json_to_recordset(%s::json) AS r({_POSTGRES_RECORD})",
            [timezone.now(), document],
        )
