"""Turning a refusal into an HTTP answer: JSON for API clients, an HTML page for browsers.

Every edge (decorators, mixins, middleware) answers through here, so a denial reads the same
wherever it happens. Bodies, status codes and the RateLimit header fields come from
:mod:`usage_limits.responses`; this module only picks the format and renders it.

=====================================  ======  ==========================
refusal                                status  ``code`` in the JSON body
=====================================  ======  ==========================
quota used up                          429     ``quota_exceeded``
subscription canceled / past grace     402     ``subscription_inactive``
plan lacks a (boolean) feature         403     ``feature_not_in_plan``
anonymous request, enforced view       401     ``authentication_required``
signed in, but no tenant               403     ``no_tenant``
tenant asked for is not the user's     403     ``tenant_access_denied``
counter store unreachable              503     ``store_unavailable``
=====================================  ======  ==========================

Browsers get ``usage_limits/limit_reached.html`` for a quota decision (429, 402; context
``decision``, ``message``, ``upgrade_url``) and ``usage_limits/refused.html`` for the others;
override either in your project's templates. Both also receive every field of the JSON body,
``status``, ``retry_after``, ``feature_label`` and, on a 401, ``login_url``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import resolve_url
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control, patch_vary_headers

from usage_limits.conf import conf
from usage_limits.responses import (
    SUBSCRIPTION_MESSAGE,
    denial_payload,
    ratelimit_headers,
    status_code,
)
from usage_limits.results import Decision
from usage_limits.rules import feature_label

TEMPLATE_NAME = "usage_limits/limit_reached.html"
REFUSED_TEMPLATE_NAME = "usage_limits/refused.html"

FEATURE_MESSAGE = "Your plan does not include {label}. Upgrade your plan."
AUTHENTICATION_MESSAGE = "Sign in to use this feature."
NO_TENANT_MESSAGE = "Your account does not belong to any organization."
STORE_UNAVAILABLE_MESSAGE = "Usage limits cannot be checked right now. Try again in a moment."

_JSON_TYPES = ("application/json", "application/problem+json", "application/vnd.api+json")


def wants_json(request: HttpRequest) -> bool:
    """Whether the client is an API client rather than a browser.

    XHR/fetch requests and clients that accept JSON get JSON; so do clients that state no
    preference (``curl``, SDKs send ``*/*`` or nothing). Only a client that asks for HTML
    explicitly (every browser navigation does) gets the page.
    """
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return True
    accept = request.headers.get("accept", "")
    if "text/html" not in accept:
        return True
    preferred = request.get_preferred_type(["text/html", *_JSON_TYPES])
    return preferred != "text/html"


def render_refusal(
    request: HttpRequest,
    status: int,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    *,
    decision: Decision | None = None,
) -> HttpResponse:
    """A refusal as JSON or HTML, with ``headers`` set either way.

    A quota decision (429, 402) renders ``usage_limits/limit_reached.html`` with ``decision``,
    ``message`` and ``upgrade_url`` (the page the dashboard shares); every other refusal renders
    ``usage_limits/refused.html``. Both also get the JSON body's fields, ``status``,
    ``retry_after`` and ``feature_label``, and ``login_url`` on a 401.
    """
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(dict(payload), status=status)
    else:
        context = {
            **payload,
            "decision": decision,
            "message": payload.get("error", ""),
            "status": status,
            "retry_after": (headers or {}).get("Retry-After"),
            "feature_label": feature_label(str(payload["feature"]))
            if payload.get("feature")
            else "",
        }
        if status == 401:
            context["login_url"] = _login_url(request)
        template = TEMPLATE_NAME if decision is not None else REFUSED_TEMPLATE_NAME
        response = HttpResponse(render_to_string(template, context, request=request), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    # The body depends on who asks and how (JSON or HTML), and tells one tenant's usage: shared
    # caches must neither mix the formats nor serve it to anyone else.
    patch_vary_headers(response, ["Accept", "X-Requested-With"])
    patch_cache_control(response, private=True, no_store=True)
    return response


def _login_url(request: HttpRequest) -> str:
    return f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': request.get_full_path()})}"


def quota_denial(request: HttpRequest, decision: Decision) -> HttpResponse:
    """429 (quota used up) or 402 (subscription), with ``RateLimit`` fields and ``Retry-After``."""
    return render_refusal(
        request,
        status_code(decision),
        denial_payload(decision),
        ratelimit_headers(decision),
        decision=decision,
    )


def feature_payload(feature: str, plan: str | None) -> dict[str, Any]:
    return {
        "success": False,
        "error": FEATURE_MESSAGE.format(label=feature_label(feature)),
        "code": "feature_not_in_plan",
        "feature": feature,
        "plan": plan,
        "upgrade_url": conf.UPGRADE_URL,
    }


def subscription_payload(feature: str, plan: str | None) -> dict[str, Any]:
    """402 body for a feature gate when the subscription no longer allows use."""
    return {
        "success": False,
        "error": SUBSCRIPTION_MESSAGE,
        "code": "subscription_inactive",
        "feature": feature,
        "plan": plan,
        "upgrade_url": conf.UPGRADE_URL,
    }


def feature_denial(request: HttpRequest, feature: str, plan: str | None) -> HttpResponse:
    """403: the tenant's plan does not include ``feature``."""
    return render_refusal(request, 403, feature_payload(feature, plan))


def _plain_payload(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": message, "code": code, "upgrade_url": conf.UPGRADE_URL}


def authentication_payload() -> dict[str, Any]:
    return _plain_payload("authentication_required", AUTHENTICATION_MESSAGE)


def no_tenant_payload() -> dict[str, Any]:
    return _plain_payload("no_tenant", NO_TENANT_MESSAGE)


def tenant_access_payload(message: str) -> dict[str, Any]:
    return _plain_payload("tenant_access_denied", message)


def store_unavailable_payload() -> dict[str, Any]:
    return _plain_payload("store_unavailable", STORE_UNAVAILABLE_MESSAGE)


def no_tenant_denial(request: HttpRequest) -> HttpResponse:
    """401 for an anonymous request, 403 for a signed-in user who belongs to no tenant."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return render_refusal(request, 401, authentication_payload())
    return render_refusal(request, 403, no_tenant_payload())


def tenant_access_denial(request: HttpRequest, message: str) -> HttpResponse:
    return render_refusal(request, 403, tenant_access_payload(message))


def invalid_quantity_payload(feature: str, message: str) -> dict[str, Any]:
    return {**_plain_payload("invalid_quantity", message), "feature": feature}


def invalid_quantity_refusal(request: HttpRequest, feature: str, message: str) -> HttpResponse:
    """400: the request asked to count a quantity that is not a whole number within range."""
    return render_refusal(request, 400, invalid_quantity_payload(feature, message))


def misconfigured_feature_payload(feature: str, error: Exception) -> dict[str, Any]:
    """The body for a view enforced with a feature that cannot be counted: ``unknown_feature``
    (no such feature) or ``wrong_feature_kind`` (a boolean feature has no counter)."""
    code = "wrong_feature_kind" if isinstance(error, TypeError) else "unknown_feature"
    return {**_plain_payload(code, str(error)), "feature": feature}


def misconfigured_feature_refusal(
    request: HttpRequest, feature: str, error: Exception
) -> HttpResponse:
    """500 with a clear body: the view is enforced with a feature that cannot be counted, a
    mistake in the site's configuration that no client can fix (no traceback page either)."""
    return render_refusal(request, 500, misconfigured_feature_payload(feature, error))


def store_unavailable(request: HttpRequest) -> HttpResponse:
    """503: the counter store could not answer, so nothing was decided (or counted)."""
    return render_refusal(request, 503, store_unavailable_payload())


# --- headers on every enforced response ---------------------------------------------------------


def combined_ratelimit_headers(decisions: Sequence[Decision]) -> dict[str, str]:
    """The RateLimit fields of every quota a request went through, as structured-field lists.

    One policy per feature (the last decision wins, e.g. after a refund); ``Retry-After`` is the
    longest wait of any denial.
    """
    if len(decisions) == 1:  # the common case: one quota per request
        return ratelimit_headers(decisions[0])
    latest: dict[str, Decision] = {}
    for decision in decisions:
        latest[decision.feature] = decision
    policies: list[str] = []
    states: list[str] = []
    retry_after: list[int] = []
    for decision in latest.values():
        fields = ratelimit_headers(decision)
        if not fields:
            continue
        policies.append(fields["RateLimit-Policy"])
        states.append(fields["RateLimit"])
        if "Retry-After" in fields:
            retry_after.append(int(fields["Retry-After"]))
    headers: dict[str, str] = {}
    if policies:
        headers["RateLimit-Policy"] = ", ".join(policies)
        headers["RateLimit"] = ", ".join(states)
    if retry_after:
        headers["Retry-After"] = str(max(retry_after))
    return headers
