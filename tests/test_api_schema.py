"""The OpenAPI schema: valid, complete, browsable offline, and true to the API under fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from openapi_spec_validator import validate as validate_spec

from usage_limits.models import Tenant

from .api_support import (
    ALL_ADMIN_PERMISSIONS,
    _strict,
    schema_document,
    staff_user,
    token_header,
)

ENDPOINTS = {
    "/api/usage/": {"get"},
    "/api/usage/history/": {"get"},
    "/api/usage/events/": {"post"},
    "/api/usage/reset/": {"post"},
    "/api/usage/limits/": {"patch"},
}


def test_the_schema_is_valid_openapi_3() -> None:
    document = schema_document()
    assert document["openapi"].startswith("3.")
    validate_spec(document)


def test_every_endpoint_and_only_ours_is_documented() -> None:
    paths = schema_document()["paths"]
    assert {path: set(methods) - {"parameters"} for path, methods in paths.items()} == ENDPOINTS


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, ms in ENDPOINTS.items() for m in ms])
def test_every_operation_documents_its_errors_and_auth(path: str, method: str) -> None:
    operation = schema_document()["paths"][path][method]
    assert {"400", "401", "403"} <= set(operation["responses"])
    assert {"tokenAuth", "cookieAuth"} <= {name for item in operation["security"] for name in item}
    for response in operation["responses"].values():
        assert "application/json" in response["content"]
    if method != "get":
        assert operation["requestBody"]["required"] is True


def test_the_strict_check_refuses_an_undocumented_field() -> None:
    import jsonschema

    document = schema_document()
    root = {"components": _strict(document["components"]), "$ref": "#/components/schemas/Error"}
    good = {"success": False, "error": "x", "code": "invalid"}
    jsonschema.validate(good, root, cls=jsonschema.Draft7Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "surprise": 1}, root, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(
    ("path", "asset"),
    [("/api/schema/swagger/", "swagger-ui-bundle.js"), ("/api/schema/redoc/", "redoc")],
)
def test_the_browsable_pages_load_their_assets_locally(path: str, asset: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert "/api/schema/" in page
    assert asset in page
    assert "cdn.jsdelivr.net" not in page
    assert "/static/drf_spectacular_sidecar/" in page


def test_the_schema_serves_yaml_by_default_and_json_on_request() -> None:
    assert Client().get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")
    as_json = Client().get("/api/schema/?format=json")
    assert as_json.json()["info"]["title"] == "django-usage-limits API"


# --- fuzzing -----------------------------------------------------------------------------------


@pytest.mark.fuzz
@pytest.mark.django_db
@pytest.mark.parametrize("caller", ["member", "staff"])
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    tenant: Tenant, caller: str, mode: str
) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.generation import GenerationMode

    from usage_limits.testing.factories import MembershipFactory, UserFactory

    if caller == "member":
        user = MembershipFactory(tenant=tenant, user=UserFactory()).user
    else:
        user = staff_user(*ALL_ADMIN_PERMISSIONS)
    authorization = token_header(user)
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    # In-process WSGI calls end with request_finished, whose close_old_connections would close
    # the connection holding this test's transaction (django.test.Client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
        _fuzz(schema, generation, authorization)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fuzz(schema: Any, generation: Any, authorization: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks: list[Any] = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    skipped: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=generation))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call(headers={"Authorization": authorization})
            case.validate_response(response, checks=checks)

        try:
            call()
        except Unsatisfiable:
            # Negative mode: an operation with nothing to make invalid (GET /api/usage/ has only
            # a free-form header) has no negative cases.
            skipped.append(operation.label)
    assert len(skipped) <= 1, skipped
