"""Move the rules version of the tenants a change affects, in the change's own transaction.

Saving or deleting a plan, a limit, a tenant or an override moves the ``rules_version`` of every
tenant whose rules it changes (:func:`usage_limits.rules.bump_rules_version`), so that no process
counts under the rules it read before. ``QuerySet.update()`` sends no signals: call
:func:`usage_limits.rules.forget_tenant`, :func:`~usage_limits.rules.forget_plan` or
:func:`~usage_limits.rules.forget_all` in the same transaction after bulk updates. A membership
change drops the request tenants that processes remember (:mod:`usage_limits.tenancy`).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from usage_limits.models import Plan, PlanLimit, Tenant, TenantLimitOverride, TenantMembership
from usage_limits.rules import (
    bump_rules_version,
    forget_plan,
    forget_rules,
    next_rules_version,
    rules_moved,
)
from usage_limits.tenancy import forget_memberships


@receiver(pre_save, sender=Plan, dispatch_uid="usage_limits_plan_saving")
@receiver(pre_save, sender=Tenant, dispatch_uid="usage_limits_tenant_saving")
def new_version(sender: type[Plan | Tenant], instance: Plan | Tenant, **kwargs: Any) -> None:
    # A full save writes a new version in the change's own statement; and an instance read
    # before another change and saved after it writes a new version too, never an older one.
    instance.rules_version = next_rules_version(instance.rules_version)


def _version_written(kwargs: dict[str, Any]) -> bool:
    update_fields = kwargs.get("update_fields")
    return update_fields is None or "rules_version" in update_fields


@receiver([post_save, post_delete], sender=Plan, dispatch_uid="usage_limits_plan_changed")
def plan_changed(sender: type[Plan], instance: Plan, **kwargs: Any) -> None:
    saved_version = kwargs.get("created") is not None and _version_written(kwargs)
    forget_plan(instance.pk, plan_version_moved=saved_version)


@receiver([post_save, post_delete], sender=PlanLimit, dispatch_uid="usage_limits_limit_changed")
def plan_limit_changed(sender: type[PlanLimit], instance: PlanLimit, **kwargs: Any) -> None:
    forget_plan(instance.plan_id)


@receiver(post_save, sender=Tenant, dispatch_uid="usage_limits_tenant_saved")
def tenant_saved(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    if _version_written(kwargs):
        rules_moved([instance.pk])
    else:  # save(update_fields=...) without the version: move it now
        instance.rules_version = bump_rules_version([instance.pk])
    _request_tenants_changed()


@receiver(post_delete, sender=Tenant, dispatch_uid="usage_limits_tenant_deleted")
def tenant_deleted(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    forget_rules(instance.pk)
    _request_tenants_changed()


@receiver(
    [post_save, post_delete],
    sender=TenantLimitOverride,
    dispatch_uid="usage_limits_override_changed",
)
def override_changed(
    sender: type[TenantLimitOverride], instance: TenantLimitOverride, **kwargs: Any
) -> None:
    bump_rules_version([instance.tenant_id])


@receiver(
    [post_save, post_delete],
    sender=TenantMembership,
    dispatch_uid="usage_limits_membership_changed",
)
def membership_changed(
    sender: type[TenantMembership], instance: TenantMembership, **kwargs: Any
) -> None:
    _request_tenants_changed()


def _request_tenants_changed() -> None:
    # The request tenants that processes remember (usage_limits.tenancy) are tenant rows found
    # through memberships. Dropped now (this process must not answer from a stale memory inside
    # the transaction) and again after commit (another may have remembered the old row meanwhile).
    forget_memberships()
    transaction.on_commit(forget_memberships)
