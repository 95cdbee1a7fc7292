"""Helpers for the API tests: signed-in clients and checking responses against the schema."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import jsonschema
from django.contrib.auth.models import Permission
from django.http import HttpResponse
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from usage_limits.api.permissions import LIMITS_PERMISSIONS, RESET_PERMISSIONS
from usage_limits.models import Tenant
from usage_limits.testing.factories import MembershipFactory, UserFactory

ALL_ADMIN_PERMISSIONS = (*RESET_PERMISSIONS, *LIMITS_PERMISSIONS)


def token_client(user: Any) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def member_client(tenant: Tenant, **user: Any) -> APIClient:
    """A client signed in (by token) as a new member of ``tenant``."""
    membership = MembershipFactory(tenant=tenant, user=UserFactory(**user))
    return token_client(membership.user)


def staff_user(*permissions: str, staff: bool = True) -> Any:
    user = UserFactory(is_staff=staff)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def staff_client(*permissions: str, staff: bool = True) -> APIClient:
    return token_client(staff_user(*permissions, staff=staff))


def token_header(user: Any) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return f"Token {token.key}"


# --- the schema ------------------------------------------------------------------------------


@cache
def schema_document() -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.content)
    return document


def _strict(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable`` becomes a union with null, and objects with
    declared properties refuse undeclared ones (a response field missing from the schema is a
    documentation bug the tests should catch)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def assert_matches_schema(response: HttpResponse, path: str, method: str) -> Any:
    """The response's JSON body, after checking it against the documented schema of its status."""
    document = schema_document()
    operation = document["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path}: {response.status_code} is not documented"
    body = json.loads(response.content)
    schema = documented["content"]["application/json"]["schema"]
    root = {"components": _strict(copy.deepcopy(document["components"])), **_strict(schema)}
    jsonschema.validate(body, root, cls=jsonschema.Draft7Validator)
    return body
