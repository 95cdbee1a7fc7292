"""The usage ledger's billing side: which features have a Stripe meter, and the identifiers.

The engine writes a pending :class:`~usage_limits.models.UsageEvent` in the same transaction as
the counter for every feature named in ``USAGE_LIMITS["BILLING"]["METERS"]``; this module says
which events those are, when one is due, and which ``identifier`` Stripe deduplicates it under.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from django.db.models import Q

from usage_limits.billing.conf import billing_conf
from usage_limits.conf import conf
from usage_limits.models import UsageEvent

# Stripe accepts meter events up to 35 calendar days old; an older one can never be billed.
STRIPE_MAX_EVENT_AGE = timedelta(days=35)
# Stripe's limit on a meter event's identifier.
MAX_IDENTIFIER_LENGTH = 100


def meter_for(feature: str) -> str | None:
    """The Stripe meter event name ``feature`` is reported under, or ``None`` (not billed)."""
    return conf.stripe_meter(feature)


def due(now: datetime) -> Q:
    """Pending events a reporter may claim now: never tried, due for a retry, or a lapsed lease."""
    return Q(report_state=UsageEvent.ReportState.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


# The part after the tenant says what names the event, so that no two kinds can meet: "k" an
# idempotency key (the client's, or one generated for it), "e" the row of an event recorded
# without a key, "h" an hour's aggregate; upper case for the SHA-256 of one too long for Stripe.
# A client key "e-5" gives "<tenant>-k-e-5", never the keyless event 5's "<tenant>-e-5".


def event_identifier(tenant_id: int, idempotency_key: str) -> str:
    """The meter event identifier of one usage event recorded under an idempotency key.

    Our keys are unique per tenant but Stripe deduplicates across the whole account, so the tenant
    is part of the identifier; a key too long to fit is replaced by its SHA-256, which is stable,
    so a re-send after a crash still carries the same identifier.
    """
    return _fitted(tenant_id, "k", idempotency_key)


def keyless_identifier(tenant_id: int, event_id: int) -> str:
    """The meter event identifier of a usage event recorded without an idempotency key."""
    return _fitted(tenant_id, "e", str(event_id))


def hour_of(timestamp: datetime) -> datetime:
    return timestamp.replace(minute=0, second=0, microsecond=0)


def hourly_identifier(tenant_id: int, feature: str, hour: datetime, first_event_id: int) -> str:
    """The identifier of events pre-aggregated per customer, meter and hour.

    Later events of the same hour form another group: the first event's id keeps every group's
    identifier distinct (each event belongs to exactly one group).
    """
    return _fitted(tenant_id, "h", f"{feature}-{hour:%Y%m%d%H}-{first_event_id}")


def _fitted(tenant_id: int, kind: str, name: str) -> str:
    identifier = f"{billing_conf.IDENTIFIER_PREFIX}{tenant_id}-{kind}-{name}"
    if len(identifier) <= MAX_IDENTIFIER_LENGTH:
        return identifier
    digest = hashlib.sha256(identifier.encode()).hexdigest()
    return f"{billing_conf.IDENTIFIER_PREFIX}{tenant_id}-{kind.upper()}-{digest}"[
        :MAX_IDENTIFIER_LENGTH
    ]


def too_old_for_stripe(timestamp: datetime, now: datetime) -> bool:
    return timestamp < now - STRIPE_MAX_EVENT_AGE
