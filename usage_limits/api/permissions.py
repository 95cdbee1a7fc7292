"""Who may call what: members of a tenant see their own tenant; staff with the app's permissions
reset usage and change limits of any tenant.

The permission classes are set on the views themselves, not taken from the project's
``DEFAULT_PERMISSION_CLASSES``, so that the API is never more open than documented. Authentication
is the project's (``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``: session, token, ...).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from usage_limits.conf import conf
from usage_limits.exceptions import TenantAccessDenied
from usage_limits.models import Tenant

RESET_PERMISSIONS = ("usage_limits.reset_usage",)
LIMITS_PERMISSIONS = (
    "usage_limits.change_tenant",
    "usage_limits.add_tenantlimitoverride",
    "usage_limits.change_tenantlimitoverride",
    "usage_limits.delete_tenantlimitoverride",
)


def resolve_tenant(request: Request | HttpRequest) -> Tenant | None:
    """The caller's tenant, by ``USAGE_LIMITS["TENANT_RESOLVER"]`` (read at call time).

    A tenant asked for that the user is not a member of answers like no tenant at all, so the
    API's 403 does not tell whether that tenant exists.
    """
    resolver: Any = import_string(conf.TENANT_RESOLVER)
    try:
        tenant = resolver(request)
    except TenantAccessDenied:
        return None
    return tenant if isinstance(tenant, Tenant) else None


class HasUsageTenant(BasePermission):
    """A signed-in member of a tenant. The tenant is kept on the view as ``view.tenant``.

    A user who asks for a tenant they do not belong to (the ``X-Tenant`` header) gets the same
    answer as a user without any tenant: nothing tells whether that tenant exists.
    """

    message = "No tenant for this account (or not the one asked for)."
    code = "no_tenant"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        tenant = resolve_tenant(request)
        if tenant is None:
            return False
        view.tenant = tenant  # type: ignore[attr-defined]
        return True


class StaffWithPermissions(BasePermission):
    """A staff user holding every permission in ``required``."""

    required: tuple[str, ...] = ()
    message = "Staff with the app's permissions only."
    code = "permission_denied"

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(
            user is not None
            and user.is_authenticated
            and user.is_staff
            and user.is_active
            and user.has_perms(self.required)
        )


class CanResetUsage(StaffWithPermissions):
    required = RESET_PERMISSIONS
    message = "Resetting usage needs staff status and the usage_limits.reset_usage permission."


class CanChangeLimits(StaffWithPermissions):
    required = LIMITS_PERMISSIONS
    message = (
        "Changing limits needs staff status and the permissions to change tenants and their "
        "limit overrides."
    )
