"""The default resolver remembers a user's tenant, and forgets it when memberships change.

Without the memo its query would be the most expensive part of an enforced request; with it, a
membership granted, revoked or made default must still take effect on the very next request.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.http import HttpRequest
from django.test import RequestFactory
from pytest_django import DjangoAssertNumQueries

from usage_limits.exceptions import TenantAccessDenied
from usage_limits.models import Tenant, TenantMembership
from usage_limits.tenancy import forget_memberships, resolve_tenant_from_membership
from usage_limits.testing.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

# Outside the test's transaction: the resolver remembers nothing it read inside one.
pytestmark = pytest.mark.django_db(transaction=True)


def request_of(user: object, rf: RequestFactory, **headers: str) -> HttpRequest:
    request = rf.get("/", headers=headers)
    request.user = user  # type: ignore[assignment]
    return request


def test_a_second_request_resolves_without_a_query(
    rf: RequestFactory, tenant: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    assert resolve_tenant_from_membership(request_of(user, rf)) == tenant
    with django_assert_num_queries(0):
        again = resolve_tenant_from_membership(request_of(user, rf))
    assert again == tenant
    assert again is not None
    assert again.name == tenant.name


def test_a_revoked_membership_counts_from_the_next_request(
    rf: RequestFactory, tenant: Tenant
) -> None:
    user = UserFactory()
    membership = MembershipFactory(user=user, tenant=tenant)
    assert resolve_tenant_from_membership(request_of(user, rf)) == tenant
    assert resolve_tenant_from_membership(request_of(user, rf, X_Tenant=tenant.slug)) == tenant
    membership.delete()
    assert resolve_tenant_from_membership(request_of(user, rf)) is None
    with pytest.raises(TenantAccessDenied):
        resolve_tenant_from_membership(request_of(user, rf, X_Tenant=tenant.slug))


def test_a_granted_membership_counts_from_the_next_request(
    rf: RequestFactory, tenant: Tenant
) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    other = TenantFactory(plan=plan_with_limits("STARTER", api_calls=1000), slug="globex")
    with pytest.raises(TenantAccessDenied):
        resolve_tenant_from_membership(request_of(user, rf, X_Tenant="globex"))
    MembershipFactory(user=user, tenant=other)
    assert resolve_tenant_from_membership(request_of(user, rf, X_Tenant="globex")) == other


def test_a_tenant_renamed_is_seen_by_the_next_request(rf: RequestFactory, tenant: Tenant) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    resolve_tenant_from_membership(request_of(user, rf))
    tenant.name = "Renamed"
    tenant.save()
    found = resolve_tenant_from_membership(request_of(user, rf))
    assert found is not None
    assert found.name == "Renamed"


def test_each_request_gets_its_own_copy(rf: RequestFactory, tenant: Tenant) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    first = resolve_tenant_from_membership(request_of(user, rf))
    assert first is not None
    first.name = "changed by a view, never saved"
    second = resolve_tenant_from_membership(request_of(user, rf))
    assert second is not None
    assert second.name == tenant.name
    assert second is not first


def test_bulk_changes_are_seen_after_forget_memberships(rf: RequestFactory, tenant: Tenant) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    resolve_tenant_from_membership(request_of(user, rf))
    TenantMembership.objects.filter(user=user).delete()  # signals fire: seen at once
    assert resolve_tenant_from_membership(request_of(user, rf)) is None
    MembershipFactory(user=user, tenant=tenant)
    resolve_tenant_from_membership(request_of(user, rf))
    other = TenantFactory(plan=tenant.plan)
    # QuerySet.update() sends no signal: the documented call makes it visible.
    TenantMembership.objects.filter(user=user).update(tenant=other)
    forget_memberships()
    assert resolve_tenant_from_membership(request_of(user, rf)) == other


def test_nothing_read_inside_a_transaction_is_remembered(
    rf: RequestFactory, tenant: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    user = UserFactory()
    with transaction.atomic():
        MembershipFactory(user=user, tenant=tenant)
        assert resolve_tenant_from_membership(request_of(user, rf)) == tenant
        transaction.set_rollback(True)  # the membership never existed
    assert resolve_tenant_from_membership(request_of(user, rf)) is None


def test_a_new_user_reusing_an_id_is_not_given_the_old_users_tenant(
    rf: RequestFactory, tenant: Tenant
) -> None:
    user = UserFactory()
    MembershipFactory(user=user, tenant=tenant)
    assert resolve_tenant_from_membership(request_of(user, rf)) == tenant
    user_id = user.pk
    user.delete()
    newcomer = UserFactory(id=user_id)
    assert resolve_tenant_from_membership(request_of(newcomer, rf)) is None
