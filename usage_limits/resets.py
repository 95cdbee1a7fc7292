"""Scheduled resets: move scheduled-mode tenants on to their current periods.

In the *scheduled* reset mode a tenant's metered counters stay in the period that contains
``Tenant.counting_since`` (see :func:`usage_limits.engine.period_for`), even after that period has
ended, until this job runs. The job is what ``manage.py usage_limits_reset_expired`` and
``POST /usage/reset-expired/`` call. For every scheduled-mode tenant it:

* pins a tenant it has never seen (``counting_since`` empty, so the engine counted lazily) to the
  start of its current period, writing no audit rows because nothing was reset;
* moves a tenant whose counted period of at least one metered feature has ended: ``counting_since``
  becomes the latest start among the current periods of its features (that instant lies in the
  current period of *every* feature, whatever their lengths), and each closed counter gets a
  :class:`~usage_limits.models.UsageReset` row with ``source="scheduled"``. The closed rows stay as
  history; the new period's counter starts at zero.

The move is one conditional ``UPDATE ... WHERE counting_since = <the value read>``: when two runs
(two cron hosts, a retried HTTP call) race, exactly one of them wins a tenant and writes its audit
rows; the other sees zero rows updated and skips it. Running the job again changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from usage_limits import signals
from usage_limits.backends import CounterKey, get_store
from usage_limits.conf import conf
from usage_limits.engine import period_for
from usage_limits.exceptions import UnknownTenant
from usage_limits.models import FeatureKind, ResetMode, Tenant, UsageReset
from usage_limits.periods import Period
from usage_limits.rules import TenantRules, forget_tenant, tenant_rules

logger = logging.getLogger("usage_limits")

__all__ = [
    "ClosedCounter",
    "ExpiryReport",
    "counting_since_for",
    "reset_expired",
    "scheduled_tenants",
    "set_reset_mode",
]


@dataclass(frozen=True, slots=True)
class ClosedCounter:
    """One counter whose period the job closed."""

    tenant_id: int
    feature: str
    period: Period
    value_before: int
    reset_id: int | None  # the UsageReset row; None on a dry run


@dataclass(slots=True)
class ExpiryReport:
    """What one run of :func:`reset_expired` did (or, on a dry run, would do)."""

    now: datetime
    dry_run: bool = False
    checked: int = 0  # scheduled-mode tenants looked at
    moved: int = 0  # tenants moved on to their current periods
    pinned: int = 0  # tenants seen for the first time: counting_since set, nothing reset
    skipped: int = 0  # tenants changed by someone else during the run (another job won)
    closed: list[ClosedCounter] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "checked": self.checked,
            "moved": self.moved,
            "pinned": self.pinned,
            "skipped": self.skipped,
            "closed": len(self.closed),
        }


@dataclass(frozen=True, slots=True)
class _Move:
    new_since: datetime
    closing: list[tuple[str, Period]]  # (feature, the counted period that has ended)


def counting_since_for(
    mode: str, previous_mode: str | None, counting_since: datetime | None, now: datetime
) -> datetime | None:
    """Where counting starts when a tenant's effective reset mode goes from ``previous_mode``
    (``None`` for a new tenant) to ``mode``.

    * lazy: ``None``; the calendar decides.
    * scheduled: ``now``. The period containing it is the current one, so the counter carries on
      in the same row without a jump; the reset job aligns it to a period start when it closes.
    * manual: ``now``. A new open-ended counter starts at zero; the period so far stays as
      history. (Keeping ``counting_since`` from an earlier stint would resume an old counter.)
    """
    if mode == previous_mode:
        return counting_since
    if mode == ResetMode.LAZY:
        return None
    return now.replace(microsecond=0)


def set_reset_mode(tenant: Tenant, mode: str, *, now: datetime | None = None) -> None:
    """Switch ``tenant`` to reset ``mode`` (``""``: follow the setting) and save it.

    ``counting_since`` moves as :func:`counting_since_for` says; saving drops the cached rules.
    """
    if mode not in ("", *ResetMode.values):
        raise ValueError(f"Unknown reset mode {mode!r}; use one of {ResetMode.values} or ''.")
    previous = tenant.reset_mode or conf.RESET_MODE
    tenant.counting_since = counting_since_for(
        mode or conf.RESET_MODE, previous, tenant.counting_since, now or timezone.now()
    )
    tenant.reset_mode = mode
    tenant.save(update_fields=["reset_mode", "counting_since", "updated_at"])


def scheduled_tenants() -> QuerySet[Tenant]:
    """Tenants in the scheduled reset mode, set on the tenant or inherited from the setting."""
    mode = Q(reset_mode=ResetMode.SCHEDULED)
    if conf.RESET_MODE == ResetMode.SCHEDULED:
        mode |= Q(reset_mode="")
    return Tenant.objects.using(conf.DATABASE_ALIAS).filter(mode)


def reset_expired(now: datetime | None = None, *, dry_run: bool = False) -> ExpiryReport:
    """Close the ended periods of every scheduled-mode tenant. Idempotent; safe to run in parallel.

    With ``dry_run`` nothing is written; the report says what a real run would do.
    """
    now = now or timezone.now()
    report = ExpiryReport(now=now, dry_run=dry_run)
    tenants = scheduled_tenants().order_by("pk").values_list("pk", "counting_since")
    for tenant_id, counting_since in tenants.iterator(chunk_size=500):
        report.checked += 1
        try:
            rules = tenant_rules(tenant_id)
        except UnknownTenant:  # deleted since the list was read
            continue
        # The row just read is the truth; the cached rules may predate another run's move.
        move = _plan_move(rules, counting_since, now)
        if move is None:
            continue
        if dry_run:
            _record(report, rules, counting_since, move, reset_ids=None)
        elif not _apply(report, rules, counting_since, move, now):
            report.skipped += 1
    return report


def _plan_move(rules: TenantRules, counting_since: datetime | None, now: datetime) -> _Move | None:
    metered = [
        rule
        for rule in rules.rules.values()
        if rule.kind == FeatureKind.METERED and rule.period is not None
    ]
    if not metered:
        return None
    lazy = dataclasses.replace(rules, reset_mode=ResetMode.LAZY)
    new_since = max(period_for(lazy, rule, now).start for rule in metered)
    if counting_since is None:
        return _Move(new_since=new_since, closing=[])
    counted = dataclasses.replace(
        rules, reset_mode=ResetMode.SCHEDULED, counting_since=counting_since
    )
    closing = []
    for rule in metered:
        period = period_for(counted, rule, now)
        if period.end is not None and period.end <= now:
            closing.append((rule.feature, period))
    if not closing or new_since <= counting_since:
        return None
    return _Move(new_since=new_since, closing=closing)


def _apply(
    report: ExpiryReport,
    rules: TenantRules,
    counting_since: datetime | None,
    move: _Move,
    now: datetime,
) -> bool:
    alias = conf.DATABASE_ALIAS
    with transaction.atomic(using=alias):
        claim = Tenant.objects.using(alias).filter(pk=rules.tenant_id)
        if counting_since is None:
            claim = claim.filter(counting_since__isnull=True)
        else:
            claim = claim.filter(counting_since=counting_since)
        if not claim.update(counting_since=move.new_since, updated_at=now):
            return False
        values = _closed_values(rules.tenant_id, move)
        resets = [
            UsageReset.objects.using(alias).create(
                tenant_id=rules.tenant_id,
                feature=feature,
                period_key=period.key,
                period_start=period.start,
                value_before=values[feature],
                value_after=0,
                reason=_reason(period),
                source=UsageReset.Source.SCHEDULED,
            )
            for feature, period in move.closing
        ]
        # QuerySet.update() sends no post_save, so drop the cached rules here and after commit.
        forget_tenant(rules.tenant_id)
        transaction.on_commit(lambda: forget_tenant(rules.tenant_id), using=alias)
        transaction.on_commit(lambda: _announce(rules.tenant_id, move, resets), using=alias)
    _record(report, rules, counting_since, move, reset_ids=[r.pk for r in resets], values=values)
    return True


def _reason(period: Period) -> str:
    ended = "" if period.end is None else f" at {period.end:%Y-%m-%d %H:%M} UTC"
    return f"Scheduled reset: the period {period.key} ended{ended}."


def _closed_values(tenant_id: int, move: _Move) -> dict[str, int]:
    keys = {feature: CounterKey(tenant_id, feature, period) for feature, period in move.closing}
    found = get_store().get_many(keys.values())
    return {feature: found[key] for feature, key in keys.items()}


def _record(
    report: ExpiryReport,
    rules: TenantRules,
    counting_since: datetime | None,
    move: _Move,
    *,
    reset_ids: list[int] | None,
    values: dict[str, int] | None = None,
) -> None:
    if counting_since is None:
        report.pinned += 1
        return
    report.moved += 1
    values = values if values is not None else _closed_values(rules.tenant_id, move)
    for index, (feature, period) in enumerate(move.closing):
        report.closed.append(
            ClosedCounter(
                tenant_id=rules.tenant_id,
                feature=feature,
                period=period,
                value_before=values[feature],
                reset_id=None if reset_ids is None else reset_ids[index],
            )
        )


def _announce(tenant_id: int, move: _Move, resets: list[UsageReset]) -> None:
    for (feature, period), reset in zip(move.closing, resets, strict=True):
        responses = signals.usage_reset.send_robust(
            sender=Tenant,
            tenant_id=tenant_id,
            feature=feature,
            period=period,
            value_before=reset.value_before,
            reset=reset,
        )
        for receiver, response in responses:
            if isinstance(response, Exception):
                logger.error(
                    "usage_limits: a usage_reset receiver (%r) failed", receiver, exc_info=response
                )
