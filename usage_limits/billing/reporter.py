"""Send pending usage events to Stripe as Billing Meter events, each exactly once.

The sequence for every batch is *claim -> send -> mark*, each step its own short transaction, so
no database lock is held during a network call:

1. **Claim.** A compare-and-set ``UPDATE`` moves due events into this run's lease
   (``claimed_by`` = the run's token, ``next_attempt_at`` = now + ``LEASE_SECONDS``). Where the
   database has ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB 10.6+) candidates are
   picked under it so concurrent reporters take disjoint rows instead of queueing; elsewhere
   (SQLite: one writer at a time) the guarded ``UPDATE`` alone decides who owns a row. Each
   event's Stripe ``identifier`` is written now, before anything is sent.
2. **Send** one meter event per event (or per customer, meter and hour) with that identifier.
3. **Mark** sent, scheduled for a retry, or failed, guarded by the run's token.

A reporter killed between 2 and 3 leaves its events pending under a lease that lapses; the next
run sends them again with the stored identifier, which Stripe deduplicates. Two live reporters
never hold the same event, so they never both send it.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import OperationalError, connections, transaction
from django.db.models import F
from django.utils import timezone

from usage_limits.billing import ledger
from usage_limits.billing.conf import billing_conf
from usage_limits.conf import conf
from usage_limits.models import UsageEvent

logger = logging.getLogger("usage_limits.billing")

SENT = "sent"
RETRY = "retry"
FAILED = "failed"
STOP = "stop"


class ReportingDisabled(Exception):
    """Stripe reporting is off: no API key in the environment."""


@dataclass(frozen=True)
class MeterEventGroup:
    """One Stripe meter event: a usage event, or several pre-aggregated into one."""

    identifier: str
    event_ids: tuple[int, ...]
    tenant_id: int
    customer_id: str
    feature: str
    event_name: str | None
    value: int
    timestamp: datetime
    attempts: int

    def params(self) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "payload": {"stripe_customer_id": self.customer_id, "value": str(self.value)},
            "identifier": self.identifier,
            "timestamp": int(self.timestamp.timestamp()),
        }


@dataclass(frozen=True)
class Delivery:
    outcome: str  # SENT, RETRY, FAILED or STOP
    error: str = ""
    requested: bool = True  # False: refused before calling Stripe


@dataclass
class BatchReport:
    number: int
    events: int = 0
    requests: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0


@dataclass
class ReportSummary:
    """What one :func:`report_pending` run did, counted in usage events (and in requests)."""

    enabled: bool = True
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    requests: int = 0
    batches: int = 0
    stopped: str = ""  # why the run ended early, if it did

    def add(self, batch: BatchReport) -> None:
        self.batches += 1
        self.claimed += batch.events
        self.sent += batch.sent
        self.retrying += batch.retrying
        self.failed += batch.failed
        self.requests += batch.requests

    def __str__(self) -> str:
        if not self.enabled:
            return (
                f"Stripe reporting is off: the environment variable "
                f"{billing_conf.STRIPE_API_KEY_ENV} is not set."
            )
        text = (
            f"{self.claimed} events in {self.requests} meter events: {self.sent} sent, "
            f"{self.retrying} to retry later, {self.failed} failed"
        )
        return f"{text}. Stopped early: {self.stopped}" if self.stopped else f"{text}."


def stripe_client() -> Any:
    """A ``StripeClient`` for the configured key, without the SDK's own retries.

    Retries are ours: persisted on the event (``next_attempt_at``), with backoff across runs.
    """
    import stripe

    api_key = billing_conf.stripe_api_key
    if not api_key:
        raise ReportingDisabled(f"{billing_conf.STRIPE_API_KEY_ENV} is not set")
    base = billing_conf.API_BASE
    return stripe.StripeClient(
        api_key,
        max_network_retries=0,
        base_addresses={"api": base} if base else None,
        http_client=stripe.new_default_http_client(timeout=billing_conf.REQUEST_TIMEOUT),
    )


def report_pending(
    limit: int | None = None,
    *,
    client: Any = None,
    progress: Callable[[BatchReport], None] | None = None,
) -> ReportSummary:
    """Send every due pending event (at most ``limit``) to Stripe; safe to run concurrently.

    Each event is tried at most once per run; one that fails waits for its backoff and a later
    run.

    Call it from a task runner (Celery beat, cron through ``usage_limits_report_stripe``) as often
    as you like. Returns a summary; does nothing when no API key is set.
    """
    if client is None:
        try:
            client = stripe_client()
        except ReportingDisabled:
            return ReportSummary(enabled=False)
    reporter = _Reporter(client)
    summary = ReportSummary()
    while limit is None or summary.claimed < limit:
        size = billing_conf.BATCH_SIZE
        if limit is not None:
            size = min(size, limit - summary.claimed)
        batch = reporter.run_batch(summary.batches + 1, size)
        if batch is None:
            break
        summary.add(batch)
        if progress is not None:
            progress(batch)
        if reporter.stopped:
            summary.stopped = reporter.stopped
            break
    return summary


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with jitter: base x 2^(attempts-1), capped, then 50-100 % of that."""
    base = billing_conf.RETRY_BASE_SECONDS
    ceiling = billing_conf.RETRY_MAX_SECONDS
    delay = min(ceiling, base * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=delay / 2 + random.uniform(0, delay / 2))


class _Reporter:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = uuid.uuid4().hex
        self.started = timezone.now()
        self.alias = conf.DATABASE_ALIAS
        self.consecutive_failures = 0
        self.stopped = ""

    # --- claim ------------------------------------------------------------------------------

    def claim(self, size: int) -> list[UsageEvent]:
        # Due as of the run's start: an event this run already tried and rescheduled waits for
        # the next run, so one run tries each event at most once; events written since the run
        # started wait too, so a run ends even while usage keeps arriving.
        now = self.started
        lease = {
            "claimed_by": self.token,
            "next_attempt_at": timezone.now() + timedelta(seconds=billing_conf.LEASE_SECONDS),
            "attempts": F("attempts") + 1,
        }
        events = UsageEvent.objects.using(self.alias)
        seen: set[int] = set()
        deadlocks = 0
        while True:
            try:
                candidates, won = self._claim_next(now, size, seen, lease)
            except OperationalError as exc:
                # Two claims can still deadlock on MariaDB; a claim is safe to run again.
                deadlocks += 1
                if deadlocks > 3 or "deadlock" not in str(exc).lower():
                    raise
                continue
            if not candidates:
                return []
            if won:
                break
            # Another reporter claimed these first: look at the next ones.
            seen.update(candidates)
        claimed = list(self._held().select_related("tenant"))
        earlier = {e.report_identifier for e in claimed if e.report_identifier}
        if earlier:
            # Events sent together before a crash must go again together, with the same value.
            events.filter(ledger.due(now), report_identifier__in=earlier).update(**lease)
            claimed = list(self._held().select_related("tenant"))
        return claimed

    def _claim_next(
        self, now: datetime, size: int, seen: set[int], lease: dict[str, Any]
    ) -> tuple[list[int], int]:
        """Try to lease the next ``size`` due events; returns the candidates and how many won."""
        events = UsageEvent.objects.using(self.alias)
        skip_locked = connections[self.alias].features.has_select_for_update_skip_locked
        # Without SKIP LOCKED the guarded UPDATE alone is the claim; a transaction around a read
        # and a write would only invite "database is locked" on SQLite.
        with transaction.atomic(using=self.alias) if skip_locked else nullcontext():
            candidates = list(
                events.filter(ledger.due(now), created_at__lte=now)
                .exclude(id__in=seen)
                .order_by("id")
                .values_list("id", flat=True)[:size]
            )
            if not candidates:
                return [], 0
            if not skip_locked:
                return candidates, events.filter(ledger.due(now), id__in=candidates).update(**lease)
            # Locked by primary key, apart from the search: a locking read that sorts would lock
            # every row it matched on MariaDB, not just the ones it returns.
            ids = list(
                events.filter(ledger.due(now), id__in=candidates)
                .select_for_update(skip_locked=True)
                .values_list("id", flat=True)
            )
            # Ours now: the update goes by primary key only, so it waits for no other row.
            return candidates, events.filter(id__in=ids).update(**lease) if ids else 0

    def _held(self) -> Any:
        return (
            UsageEvent.objects.using(self.alias)
            .filter(claimed_by=self.token, report_state=UsageEvent.ReportState.PENDING)
            .order_by("id")
        )

    def group(self, events: list[UsageEvent]) -> list[MeterEventGroup]:
        """One group per Stripe meter event; new identifiers are stored before any send."""
        stored = {e.report_identifier for e in events if e.report_identifier}
        groups: dict[str, list[UsageEvent]] = defaultdict(list)
        fresh: list[UsageEvent] = []
        for event in events:
            if event.report_identifier:
                groups[event.report_identifier].append(event)
            else:
                fresh.append(event)
        if billing_conf.AGGREGATE == "hour":
            hours: dict[tuple[int, str, datetime], list[UsageEvent]] = defaultdict(list)
            for event in fresh:
                hours[(event.tenant_id, event.feature, ledger.hour_of(event.timestamp))].append(
                    event
                )
            for (tenant_id, feature, hour), members in hours.items():
                identifier = ledger.hourly_identifier(
                    tenant_id, feature, hour, min(e.pk for e in members)
                )
                for event in members:
                    event.report_identifier = identifier
                groups[identifier] = members
        else:
            for event in fresh:
                event.report_identifier = (
                    ledger.event_identifier(event.tenant_id, event.idempotency_key)
                    if event.idempotency_key is not None
                    else ledger.keyless_identifier(event.tenant_id, event.pk)
                )
                groups[event.report_identifier].append(event)
        if fresh:
            UsageEvent.objects.using(self.alias).bulk_update(fresh, ["report_identifier"])
        if stored:
            self._drop_incomplete(groups, stored)
        return [self._group(identifier, members) for identifier, members in groups.items()]

    def _drop_incomplete(self, groups: dict[str, list[UsageEvent]], stored: set[str]) -> None:
        """Hand back a group stored by an earlier run if another run holds part of it.

        Sending part of a group under its identifier would lose the rest: Stripe would drop the
        rest later as a duplicate.
        """
        outside = set(
            UsageEvent.objects.using(self.alias)
            .filter(report_identifier__in=stored, report_state=UsageEvent.ReportState.PENDING)
            .exclude(claimed_by=self.token)
            .values_list("report_identifier", flat=True)
        )
        for identifier in outside:
            self._release(groups.pop(identifier), delay=billing_conf.LEASE_SECONDS)

    @staticmethod
    def _group(identifier: str, members: list[UsageEvent]) -> MeterEventGroup:
        first = min(members, key=lambda e: (e.timestamp, e.pk))
        return MeterEventGroup(
            identifier=identifier,
            event_ids=tuple(sorted(e.pk for e in members)),
            tenant_id=first.tenant_id,
            customer_id=first.tenant.stripe_customer_id,
            feature=first.feature,
            event_name=ledger.meter_for(first.feature),
            value=sum(e.quantity for e in members),
            timestamp=first.timestamp,
            attempts=max(e.attempts for e in members),
        )

    # --- send ----------------------------------------------------------------------------------

    def deliver(self, group: MeterEventGroup) -> Delivery:
        import stripe

        now = timezone.now()
        if group.event_name is None:
            return Delivery(
                FAILED, f"No Stripe meter is configured for {group.feature!r}.", requested=False
            )
        if not group.customer_id:
            return Delivery(FAILED, "The tenant has no Stripe customer id.", requested=False)
        if ledger.too_old_for_stripe(group.timestamp, now):
            return Delivery(
                FAILED,
                "Older than Stripe's 35-day window for meter events: it cannot be billed.",
                requested=False,
            )
        service = getattr(self.client, "v1", self.client).billing.meter_events
        try:
            service.create(params=group.params())
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            return Delivery(STOP, f"Stripe refused the API key: {_describe(exc)}")
        except stripe.InvalidRequestError as exc:
            if _already_recorded(exc):
                return Delivery(SENT)
            return Delivery(FAILED, f"Stripe rejected the meter event: {_describe(exc)}")
        except stripe.StripeError as exc:
            # 429, 5xx, 409 (a concurrent request with the same key) and network errors
            return Delivery(RETRY, _describe(exc))
        return Delivery(SENT)

    # --- mark ----------------------------------------------------------------------------------

    def run_batch(self, number: int, size: int) -> BatchReport | None:
        events = self.claim(size)
        if not events:
            return None
        groups = self.group(events)
        report = BatchReport(number=number)
        pending = list(groups)
        try:
            while pending:
                group = pending.pop(0)
                report.events += len(group.event_ids)
                delivery = self.deliver(group)
                report.requests += int(delivery.requested)
                self.mark(group, delivery, report)
                if self.stopped:
                    break
        finally:
            # Whatever was claimed and not sent (an early stop, an unexpected error) goes back.
            self._release_groups(pending)
        return report

    def mark(self, group: MeterEventGroup, delivery: Delivery, report: BatchReport) -> None:
        now = timezone.now()
        held = self._held().filter(id__in=group.event_ids)
        count = len(group.event_ids)
        if delivery.outcome == SENT:
            report.sent += count
            self.consecutive_failures = 0
            held.update(
                report_state=UsageEvent.ReportState.SENT,
                reported_at=now,
                last_error="",
                claimed_by="",
                next_attempt_at=None,
            )
        elif delivery.outcome == FAILED:
            report.failed += count
            logger.warning("usage_limits: meter event %s failed: %s", group.identifier, delivery)
            held.update(
                report_state=UsageEvent.ReportState.FAILED,
                last_error=delivery.error,
                claimed_by="",
                next_attempt_at=None,
            )
        elif delivery.outcome == RETRY and group.attempts >= billing_conf.MAX_ATTEMPTS:
            report.failed += count
            held.update(
                report_state=UsageEvent.ReportState.FAILED,
                last_error=f"Gave up after {group.attempts} attempts: {delivery.error}",
                claimed_by="",
                next_attempt_at=None,
            )
        elif delivery.outcome == RETRY:
            report.retrying += count
            self.consecutive_failures += 1
            held.update(
                last_error=delivery.error,
                claimed_by="",
                next_attempt_at=now + backoff(group.attempts),
            )
            if self.consecutive_failures >= billing_conf.MAX_CONSECUTIVE_FAILURES:
                self.stopped = (
                    f"{self.consecutive_failures} retryable failures in a row "
                    f"(last: {delivery.error})"
                )
        else:  # STOP: a configuration problem, not the event's
            report.events -= count
            self._release(list(held), delay=0, error=delivery.error)
            self.stopped = delivery.error

    def _release_groups(self, groups: Iterable[MeterEventGroup]) -> None:
        ids = [event_id for group in groups for event_id in group.event_ids]
        if ids:
            self._release(list(self._held().filter(id__in=ids)), delay=0)

    def _release(self, events: list[UsageEvent], *, delay: float, error: str = "") -> None:
        """Hand events back unsent: the claim did not count as an attempt."""
        changes: dict[str, Any] = {
            "claimed_by": "",
            "attempts": F("attempts") - 1,
            "next_attempt_at": timezone.now() + timedelta(seconds=delay),
        }
        if error:
            changes["last_error"] = error
        self._held().filter(id__in=[e.pk for e in events]).update(**changes)


def _already_recorded(error: Any) -> bool:
    """Whether Stripe refused the event because it already has its identifier.

    That is the outcome we want (the first send got through but its answer was lost).
    """
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "user_message", None) or error).lower()
    if code == "resource_already_exists":
        return True
    param = str(getattr(error, "param", "") or "")
    return (param == "identifier" or "identifier" in message) and (
        "already" in message or "duplicate" in message
    )


def _describe(error: Any) -> str:
    status = getattr(error, "http_status", None)
    message = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return f"{status} {message}" if status else f"{type(error).__name__}: {message}"
