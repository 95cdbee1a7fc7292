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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from usage_limits import signals
from usage_limits.backends import CounterKey, get_store
from usage_limits.conf import conf
from usage_limits.engine import period_for
from usage_limits.models import FeatureKind, ResetMode, Tenant, TenantLimitOverride, UsageReset
from usage_limits.periods import Period
from usage_limits.rules import TenantRules, bump_rules_version, rules_for_row

logger = logging.getLogger("usage_limits")

CHUNK_SIZE = 500

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
    tenant_id: int
    counting_since: datetime | None  # as read: the UPDATE only applies if it is still this
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
    return Tenant.objects.using(conf.DATABASE_ALIAS).filter(mode).select_related("plan")


def reset_expired(now: datetime | None = None, *, dry_run: bool = False) -> ExpiryReport:
    """Close the ended periods of every scheduled-mode tenant. Idempotent; safe to run in parallel.

    With ``dry_run`` nothing is written; the report says what a real run would do.
    """
    now = now or timezone.now()
    report = ExpiryReport(now=now, dry_run=dry_run)
    # A batch job over every scheduled tenant, a chunk at a time: the rules are built from the
    # rows read (not through the per-tenant cache), and each chunk costs one query for its
    # overrides, one conditional UPDATE per tenant that moves, one read of the closed counters
    # and one insert of the audit rows.
    tenants = scheduled_tenants().order_by("pk").iterator(chunk_size=CHUNK_SIZE)
    for chunk in _chunks(tenants):
        report.checked += len(chunk)
        overrides = _overrides_of([tenant.pk for tenant in chunk])
        moves = []
        for tenant in chunk:
            rules = rules_for_row(tenant, overrides.get(tenant.pk, {}))
            move = _plan_move(rules, tenant.counting_since, now)
            if move is not None:
                moves.append(move)
        if not moves:
            continue
        if dry_run:
            _record(report, moves, _closed_values(moves), resets=None)
        else:
            _apply(report, moves, now)
    if report.moved or report.pinned:
        logger.info(
            "usage_limits: scheduled reset%s: %s",
            " (dry run)" if dry_run else "",
            report.as_dict(),
        )
    return report


def _chunks(tenants: Iterator[Tenant]) -> Iterator[list[Tenant]]:
    chunk: list[Tenant] = []
    for tenant in tenants:
        chunk.append(tenant)
        if len(chunk) == CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _overrides_of(tenant_ids: list[int]) -> dict[int, dict[str, int | None]]:
    found: dict[int, dict[str, int | None]] = {}
    rows = (
        TenantLimitOverride.objects.using(conf.DATABASE_ALIAS)
        .filter(tenant_id__in=tenant_ids)
        .values_list("tenant_id", "feature", "limit")
    )
    for tenant_id, feature, limit in rows:
        found.setdefault(tenant_id, {})[feature] = limit
    return found


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
        return _Move(rules.tenant_id, None, new_since, closing=[])
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
    return _Move(rules.tenant_id, counting_since, new_since, closing)


def _apply(report: ExpiryReport, moves: list[_Move], now: datetime) -> None:
    alias = conf.DATABASE_ALIAS
    with transaction.atomic(using=alias):
        won = [move for move in moves if _claim(move, now, alias)]
        report.skipped += len(moves) - len(won)
        values = _closed_values(won)
        resets = _write_audit(won, values, alias)
        # QuerySet.update() sends no post_save: move their rules versions in this transaction.
        bump_rules_version([move.tenant_id for move in won])
        transaction.on_commit(lambda: _after_commit(won, resets), using=alias)
    _record(report, won, values, resets)


def _claim(move: _Move, now: datetime, alias: str) -> bool:
    """The conditional UPDATE: only one of several concurrent runs moves a given tenant."""
    claim = Tenant.objects.using(alias).filter(pk=move.tenant_id)
    if move.counting_since is None:
        claim = claim.filter(counting_since__isnull=True)
    else:
        claim = claim.filter(counting_since=move.counting_since)
    return bool(claim.update(counting_since=move.new_since, updated_at=now))


def _closed_values(moves: list[_Move]) -> dict[tuple[int, str], int]:
    keys = {
        (move.tenant_id, feature): CounterKey(move.tenant_id, feature, period)
        for move in moves
        for feature, period in move.closing
    }
    if not keys:
        return {}
    found = get_store().get_many(keys.values())
    return {where: found[key] for where, key in keys.items()}


def _write_audit(
    moves: list[_Move], values: dict[tuple[int, str], int], alias: str
) -> dict[tuple[int, str], UsageReset]:
    rows = [
        UsageReset(
            tenant_id=move.tenant_id,
            feature=feature,
            period_key=period.key,
            period_start=period.start,
            value_before=values[move.tenant_id, feature],
            value_after=0,
            reason=_reason(period),
            source=UsageReset.Source.SCHEDULED,
        )
        for move in moves
        for feature, period in move.closing
    ]
    if connections[alias].features.can_return_rows_from_bulk_insert:
        UsageReset.objects.using(alias).bulk_create(rows)
    else:  # MySQL proper: the signal receivers need the rows' ids
        for row in rows:
            row.save(using=alias)
    return {(row.tenant_id, row.feature): row for row in rows}


def _reason(period: Period) -> str:
    ended = "" if period.end is None else f" at {period.end:%Y-%m-%d %H:%M} UTC"
    return f"Scheduled reset: the period {period.key} ended{ended}."


def _record(
    report: ExpiryReport,
    moves: list[_Move],
    values: dict[tuple[int, str], int],
    resets: dict[tuple[int, str], UsageReset] | None,
) -> None:
    for move in moves:
        if move.counting_since is None:
            report.pinned += 1
            continue
        report.moved += 1
        for feature, period in move.closing:
            reset = None if resets is None else resets[move.tenant_id, feature]
            report.closed.append(
                ClosedCounter(
                    tenant_id=move.tenant_id,
                    feature=feature,
                    period=period,
                    value_before=values[move.tenant_id, feature],
                    reset_id=None if reset is None else reset.pk,
                )
            )


def _after_commit(moves: list[_Move], resets: dict[tuple[int, str], UsageReset]) -> None:
    for move in moves:
        for feature, period in move.closing:
            reset = resets[move.tenant_id, feature]
            _announce(move.tenant_id, feature, period, reset)


def _announce(tenant_id: int, feature: str, period: Period, reset: UsageReset) -> None:
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
