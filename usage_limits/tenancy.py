"""Finding the tenant of a request.

``USAGE_LIMITS["TENANT_RESOLVER"]`` names a callable ``(request) -> Tenant | None``. The default
uses the signed-in user's memberships: the one marked default, else the oldest. A user in several
tenants may pick one with the ``X-Tenant`` header (a tenant slug or id), which is only honoured
when the user is a member of that tenant.
"""

from __future__ import annotations

from django.http import HttpRequest

from usage_limits.models import Tenant, TenantMembership

TENANT_HEADER = "X-Tenant"


def resolve_tenant_from_membership(request: HttpRequest) -> Tenant | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    memberships = TenantMembership.objects.filter(user_id=user.pk).select_related("tenant__plan")
    asked = request.headers.get(TENANT_HEADER, "").strip()
    if asked:
        lookup = {"tenant__pk": int(asked)} if asked.isdigit() else {"tenant__slug": asked}
        membership = memberships.filter(**lookup).first()
        return None if membership is None else membership.tenant
    membership = memberships.order_by("-is_default", "created_at", "pk").first()
    return None if membership is None else membership.tenant
