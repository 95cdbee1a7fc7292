"""Keep the cached rules of :mod:`usage_limits.rules` in step with the database.

Saving or deleting a plan, a limit, a tenant, an override or a membership drops the cached entries
it affects, after the transaction commits (dropping them earlier would let a concurrent check cache
the old values again). ``QuerySet.update()`` sends no signals: call
:func:`usage_limits.rules.forget_tenant`, :func:`usage_limits.rules.forget_plan` or
:func:`usage_limits.rules.forget_memberships` after bulk updates.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from usage_limits.models import Plan, PlanLimit, Tenant, TenantLimitOverride, TenantMembership
from usage_limits.rules import forget_memberships, forget_plan, forget_tenant


def _after_commit(func: Any, *args: Any) -> None:
    # Drop now (this process must not read a stale entry inside the transaction) and again after
    # commit (another process may have cached the old row in between).
    func(*args)
    transaction.on_commit(lambda: func(*args))


@receiver([post_save, post_delete], sender=Plan, dispatch_uid="usage_limits_plan_changed")
def plan_changed(sender: type[Plan], instance: Plan, **kwargs: Any) -> None:
    _after_commit(forget_plan, instance.pk)


@receiver([post_save, post_delete], sender=PlanLimit, dispatch_uid="usage_limits_limit_changed")
def plan_limit_changed(sender: type[PlanLimit], instance: PlanLimit, **kwargs: Any) -> None:
    _after_commit(forget_plan, instance.plan_id)


@receiver([post_save, post_delete], sender=Tenant, dispatch_uid="usage_limits_tenant_changed")
def tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    _after_commit(forget_tenant, instance.pk)


@receiver(
    [post_save, post_delete],
    sender=TenantLimitOverride,
    dispatch_uid="usage_limits_override_changed",
)
def override_changed(
    sender: type[TenantLimitOverride], instance: TenantLimitOverride, **kwargs: Any
) -> None:
    _after_commit(forget_tenant, instance.tenant_id)


@receiver(
    [post_save, post_delete],
    sender=TenantMembership,
    dispatch_uid="usage_limits_membership_changed",
)
def membership_changed(
    sender: type[TenantMembership], instance: TenantMembership, **kwargs: Any
) -> None:
    # The request tenants remembered by usage_limits.tenancy depend on memberships.
    _after_commit(forget_memberships)
