"""One error shape for every failure of the API, in the seeds' ``{"success": false}`` envelope.

Every error body has ``success`` (false), ``error`` (a sentence for people) and ``code`` (for
programs); a 400 also has ``errors``: what is wrong with which field (for a batch of events, keyed
by the event's index). Quota denials (429/402) use :mod:`usage_limits.responses` instead, the body
every edge of the app sends.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from usage_limits.denials import store_unavailable_payload
from usage_limits.enforcement import STORE_ERRORS, log_refused_unavailable

INVALID_MESSAGE = "The request is not valid; see errors."


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = (
        "The request body is larger than the site accepts (DATA_UPLOAD_MAX_MEMORY_SIZE)."
    )
    default_code = "payload_too_large"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler (status, headers such as ``WWW-Authenticate``), with the app's body.

    A store that cannot answer (Redis down with ``REDIS_FAIL_MODE = "closed"``, a database
    connection that dropped) is a 503 with the body every edge sends, never a 500 page.
    """
    if isinstance(exc, RequestDataTooBig):
        # Django's check of DATA_UPLOAD_MAX_MEMORY_SIZE, met while DRF reads the body: in the
        # API's shape, not Django's HTML 400 page.
        exc = PayloadTooLarge()
    if isinstance(exc, STORE_ERRORS):
        request = context.get("request")
        log_refused_unavailable("store", exc, getattr(request, "path", "an API request"))
        set_rollback()
        return Response(store_unavailable_payload(), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    response.data = error_body(exc)
    return response


def error_body(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        return {
            "success": False,
            "error": INVALID_MESSAGE,
            "code": "invalid",
            "errors": _as_fields(exc.detail),
        }
    if isinstance(exc, exceptions.ParseError):
        return {
            "success": False,
            "error": str(exc.detail),
            "code": "parse_error",
            "errors": {"non_field_errors": [str(exc.detail)]},
        }
    detail = exc.detail
    code = exc.get_codes()
    return {
        "success": False,
        "error": str(detail),
        "code": code if isinstance(code, str) else exc.default_code,
    }


def invalid(fields: dict[str, Any]) -> exceptions.ValidationError:
    """A 400 with these field errors (``{"field": ["message"]}``)."""
    return exceptions.ValidationError(fields)


def not_found(message: str) -> exceptions.NotFound:
    return exceptions.NotFound(message)


def _as_fields(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {str(key): _plain(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": _plain(detail)}
    return {"non_field_errors": [str(detail)]}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return str(value)


__all__ = ["api_exception_handler", "error_body", "invalid", "not_found", "status"]
