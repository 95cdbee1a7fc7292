"""Finding the tenant of a request.

``USAGE_LIMITS["TENANT_RESOLVER"]`` names a callable ``(request) -> Tenant | None``. The default
uses the signed-in user's memberships: the one marked default, else the oldest. A user in several
tenants may pick one with the ``X-Tenant`` header (a tenant slug or id, the header's name is
``USAGE_LIMITS["TENANT_HEADER"]``), which is only honoured when the user is a member of that
tenant: asking for any other tenant raises :class:`~usage_limits.exceptions.TenantAccessDenied`
(a 403 at every edge) rather than falling back to a tenant the client did not ask for.

Custom resolvers (a subdomain, an API key, an organizations app) follow the same contract: return
the tenant, ``None`` when the request has none, or raise ``TenantAccessDenied``.

Edges resolve a request's tenant once, through :func:`resolve_request_tenant`, which remembers the
answer on the request (the middleware, a decorator and a DRF permission on the same request share
it).
"""

from __future__ import annotations

import copy
import functools
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.db import connections
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.request import HttpHeaders
from django.utils.module_loading import import_string

from usage_limits.caching import cache, cache_key
from usage_limits.conf import conf
from usage_limits.exceptions import TenantAccessDenied
from usage_limits.models import Tenant
from usage_limits.numbers import primary_key

TenantResolver = Callable[[HttpRequest], Tenant | None]

# Historical name of the default header; the setting decides.
TENANT_HEADER = "X-Tenant"

_RESOLVED = "_usage_limits_tenant"


def resolve_tenant_from_membership(request: HttpRequest) -> Tenant | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    header = conf.TENANT_HEADER
    # From META: request.headers would build a dict of every header only to read this one.
    asked = str(request.META.get(HttpHeaders.to_wsgi_name(header), "")).strip() if header else ""
    # The answer is remembered per process until a membership changes anywhere (a generation
    # token in the cache): without it, this query would cost more than the quota check itself.
    memo_key = (user.pk, asked)
    generation = memberships_generation()
    remembered = _REMEMBERED.get(memo_key)
    if remembered is not None and remembered[0] == generation:
        tenant = remembered[1]
    else:
        tenant = _member_tenant(user.pk, asked)
        # Not inside a transaction: one that rolls back would leave an answer remembered from
        # rows that never existed (a membership granted, then undone). So with ATOMIC_REQUESTS
        # the resolver queries on every request.
        if not connections[Tenant.objects.db].in_atomic_block:
            with _remembered_lock:
                if len(_REMEMBERED) >= _REMEMBERED_MAX:
                    _REMEMBERED.clear()
                _REMEMBERED[memo_key] = (generation, tenant)
    if tenant is None:
        if asked:
            # Never fall back to another tenant: the client named one it may not use. The
            # asked-for name is not echoed: the answer must not tell whether that tenant exists.
            raise TenantAccessDenied("You are not a member of the tenant you asked for.")
        return None
    # A copy per request: views may change request.tenant, and the remembered one is shared.
    return copy.copy(tenant)


# (user id, asked-for tenant) -> (generation, tenant or None). Bounded; cleared when full.
_REMEMBERED: dict[tuple[Any, str], tuple[str, Tenant | None]] = {}
_REMEMBERED_MAX = 10_000
_remembered_lock = threading.Lock()

# The generation of a process whose cache is its own (LocMemCache, DummyCache): other processes
# cannot tell it about their changes there, so the token also turns over every CACHE_TIMEOUT
# seconds, which bounds how long a membership removed elsewhere is still honoured here.
_process_generation = secrets.token_hex(8)
_process_generation_expires = 0.0


def memberships_generation() -> str:
    """A token that changes whenever a membership changes (shared through the cache)."""
    global _process_generation, _process_generation_expires
    shared = cache()
    if isinstance(shared, LocMemCache | DummyCache):
        now = time.monotonic()
        if now >= _process_generation_expires:
            _process_generation = secrets.token_hex(8)
            _process_generation_expires = now + conf.CACHE_TIMEOUT
        return _process_generation
    key = cache_key("memberships")
    generation = shared.get(key)
    if not isinstance(generation, str):
        shared.add(key, secrets.token_hex(8), None)
        generation = shared.get(key) or ""
    return str(generation)


def forget_memberships() -> None:
    """Drop every process's remembered request tenants (after memberships changed)."""
    global _process_generation
    _process_generation = secrets.token_hex(8)
    with _remembered_lock:
        _REMEMBERED.clear()
    cache().set(cache_key("memberships"), secrets.token_hex(8), None)


def _member_tenant(user_id: Any, asked: str) -> Tenant | None:
    # One query, a single join (memberships are unique per tenant and user, so no row repeats),
    # without loading the plan the engine reads from cache.
    tenants = Tenant.objects.filter(memberships__user_id=user_id)
    if asked:
        pk = primary_key(asked)
        if pk is not None:
            return tenants.filter(pk=pk).first()
        return tenants.filter(slug=asked).first()
    return tenants.order_by(
        "-memberships__is_default", "memberships__created_at", "memberships__pk"
    ).first()


def resolve_tenant_from_subdomain(request: HttpRequest) -> Tenant | None:
    """The tenant named by the host's first label (``acme.example.com`` -> slug ``acme``).

    The subdomain is chosen by the client, so it is checked like the header: a signed-in user
    who is not a member gets :class:`~usage_limits.exceptions.TenantAccessDenied`, and anonymous
    requests have no tenant (401 on enforced views, or pass through with
    ``ANONYMOUS_REQUESTS = "allow"``).
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    labels = request.get_host().split(":")[0].split(".")
    if len(labels) < 3:  # example.com, localhost: no subdomain
        return None
    slug = labels[0]
    tenant = Tenant.objects.filter(memberships__user_id=user.pk, slug=slug).first()
    if tenant is None:
        raise TenantAccessDenied("You are not a member of the tenant you asked for.")
    return tenant


@functools.cache
def _load_resolver(path: str) -> TenantResolver:
    resolver: TenantResolver = import_string(path)
    return resolver


def get_tenant_resolver() -> TenantResolver:
    """The configured resolver (``USAGE_LIMITS["TENANT_RESOLVER"]``), imported once."""
    return _load_resolver(conf.TENANT_RESOLVER)


@receiver(setting_changed, dispatch_uid="usage_limits_reset_tenant_resolver")
def _reset_resolver(setting: str, **kwargs: Any) -> None:
    if setting == "USAGE_LIMITS":
        _load_resolver.cache_clear()


def resolve_request_tenant(request: HttpRequest) -> Tenant | None:
    """The request's tenant, resolved once per request (synchronous: it may query).

    Raises :class:`~usage_limits.exceptions.TenantAccessDenied` when the request asked for a
    tenant it may not use; that answer is remembered too.
    """
    cached = request.__dict__.get(_RESOLVED, _RESOLVED)
    if cached is not _RESOLVED:
        if isinstance(cached, TenantAccessDenied):
            raise cached
        return cached  # type: ignore[no-any-return]
    try:
        tenant = get_tenant_resolver()(request)
    except TenantAccessDenied as denied:
        request.__dict__[_RESOLVED] = denied
        raise
    request.__dict__[_RESOLVED] = tenant
    return tenant


def remember_request_tenant(request: HttpRequest, tenant: Tenant | None) -> None:
    """Record a tenant found by other means (tests, a view that switched tenant)."""
    request.__dict__[_RESOLVED] = tenant


def forget_request_tenant(request: HttpRequest) -> None:
    """Resolve again on next use (after authentication that happened later, e.g. in DRF)."""
    request.__dict__.pop(_RESOLVED, None)
