"""The ways a caller reaches the quota engine, as one ``surface`` parameter.

The engine is the first surface. An edge (a view decorator, the REST API) joins by adding a
:class:`Surface` to :data:`SURFACES` that performs the same operations through its own door and
reports them in the same terms: an :class:`Admission` when the call went through, or the
library's own exception class when it was refused (an HTTP surface maps its error response back
to the class it stands for, e.g. a 400 with ``"code": "invalid_quantity"`` to
:class:`~usage_limits.exceptions.InvalidQuantity`). The proofs then run once per surface.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponse
from django.test import Client

from usage_limits import check_limit, consume, increment_usage, refund, reset_usage, set_usage
from usage_limits.exceptions import (
    FeatureNotInPlan,
    InvalidIdempotencyKey,
    InvalidQuantity,
    StoreUnavailable,
    UnknownFeature,
    UnknownTenant,
    UsageLimitsError,
    WrongFeatureKind,
)
from usage_limits.models import Tenant, TenantMembership
from usage_limits.results import Decision
from usage_limits.testing.factories import UserFactory

from . import edges

# Operations a surface may offer; the bad-input matrix crosses them with every bad value.
CONSUME = "consume"
INCREMENT = "increment_usage"
CHECK = "check_limit"
REFUND = "refund"
SET = "set_usage"
RESET = "reset_usage"  # takes no quantity


@dataclass(frozen=True)
class Admission:
    """What a caller learns from one counting call."""

    admitted: bool
    used: int | None  # the counter after the call, when the surface tells it
    period_key: str | None = None
    replayed: bool = False

    @classmethod
    def from_decision(cls, decision: Decision) -> Admission:
        return cls(
            admitted=decision.allowed,
            used=decision.used,
            period_key=decision.period.key,
            replayed=decision.replayed,
        )


# The proofs (test modules) a surface joins; the others are deselected for it at collection.
EVERY_PROOF = frozenset(
    {
        "over_admission",
        "lost_updates",
        "period_rollover",
        "idempotency_storm",
        "threshold_signals",
        "bad_input",
    }
)


class Surface:
    """A door to the engine. Subclasses implement the operations listed in ``operations``."""

    name: str = ""
    operations: frozenset[str] = frozenset()
    proofs: frozenset[str] = EVERY_PROOF
    load_stores: frozenset[str] | None = None  # stores of its load proofs (None: every store)
    # Share of a proof's trials (or calls) run through this surface: an HTTP request through the
    # whole Django stack costs far more than an engine call, and CI time is bounded.
    scale: float = 1.0

    def for_one_test(self) -> Surface:
        """The surface one test uses (a surface with per-test state makes a fresh copy)."""
        return self

    def scaled(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def inapplicable(self, value_name: str) -> str | None:
        """Why a bad value of the matrix cannot be sent through this door (``None``: it can)."""
        return None

    def call(
        self, operation: str, tenant: Any, feature: Any, quantity: Any, **options: Any
    ) -> Admission:
        raise NotImplementedError

    def consume(self, tenant: Any, feature: Any, quantity: Any = 1, **options: Any) -> Admission:
        return self.call(CONSUME, tenant, feature, quantity, **options)


class EngineSurface(Surface):
    """The public Python API (``usage_limits.consume`` and friends)."""

    name = "engine"
    operations = frozenset({CONSUME, INCREMENT, CHECK, REFUND, SET, RESET})

    def call(
        self, operation: str, tenant: Any, feature: Any, quantity: Any, **options: Any
    ) -> Admission:
        if operation == RESET:
            reset_usage(tenant, feature, **options)
            return Admission(admitted=True, used=0)
        functions = {
            CONSUME: consume,
            INCREMENT: increment_usage,
            CHECK: check_limit,
            REFUND: refund,
            SET: set_usage,
        }
        return Admission.from_decision(functions[operation](tenant, feature, quantity, **options))


class HttpSurface(Surface):
    """An edge reached over HTTP with Django's test client, as a signed-in member of the tenant.

    Each thread has its own client (and session). The tenant is named the way a client names it,
    by id in the ``X-Tenant`` header; the surface's user is made a member of every existing
    tenant it is asked about, so a bad tenant is one the header cannot name. Error answers are
    mapped back to the library's exception classes by their ``code`` (and, for the API's 400s,
    by the field in error); a 500, an unknown code or a traceback in a body fails the proof.
    """

    scale = 0.1
    # The edge never touches a store itself: its load proofs run on the database store (the
    # Redis store's are proved through the engine); the bad-input matrix runs on every store.
    load_stores = frozenset({"database"})
    # Over HTTP every id is a string: "7" names tenant 7, so a string id is not a bad value.
    not_over_http = frozenset({"tenant id as a string"})

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._user: Any = None
        self._members: set[int] = set()

    def for_one_test(self) -> HttpSurface:
        return type(self)()

    def inapplicable(self, value_name: str) -> str | None:
        if value_name in self.not_over_http:
            return "over HTTP every tenant id is a string"
        return None

    # --- the client's side ---------------------------------------------------------------------

    def client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(raise_request_exception=False, HTTP_ACCEPT="application/json")
            client.force_login(self._member())
            self._local.client = client
        return client

    def _member(self) -> Any:
        with self._lock:
            if self._user is None:
                self._user = UserFactory(username=f"surface-{uuid.uuid4().hex[:12]}")
            return self._user

    def tenant_header(self, tenant: Any) -> str:
        pk = tenant.pk if isinstance(tenant, Tenant) else tenant
        if type(pk) is int and 0 < pk < 2**63:
            user = self._member()
            with self._lock:
                if pk not in self._members and Tenant.objects.filter(pk=pk).exists():
                    TenantMembership.objects.get_or_create(user=user, tenant_id=pk)
                    self._members.add(pk)
        return str(pk)

    # --- the server's answer -------------------------------------------------------------------

    def read(self, response: HttpResponse) -> Admission:
        text = response.content.decode("utf-8", "replace")
        assert "Traceback (most recent call last)" not in text, f"a traceback: {text}"
        assert response.status_code != 500 or self.allows_500(text), f"500: {text[:500]}"
        body = json.loads(text)
        status = response.status_code
        if status in (200, 201):
            data = body.get("data", body)
            return Admission(
                admitted=data.get("accepted", True),
                used=data.get("used"),
                period_key=data.get("period"),
                replayed=bool(data.get("replayed", False)),
            )
        if status in (402, 429):
            return Admission(admitted=False, used=body.get("used"))
        raise self.error(status, body)

    def allows_500(self, text: str) -> bool:
        # A view enforced with a feature that cannot be counted is the site's mistake: a 500,
        # with a clear body (the codes below), is the right answer there and only there.
        return '"code": "unknown_feature"' in text or '"code": "wrong_feature_kind"' in text

    def error(self, status: int, body: dict[str, Any]) -> UsageLimitsError:
        code = body.get("code")
        message = str(body.get("error", ""))
        by_code: dict[str, type[UsageLimitsError]] = {
            "invalid_quantity": InvalidQuantity,
            "unknown_feature": UnknownFeature,
            "wrong_feature_kind": WrongFeatureKind,
            "feature_not_in_plan": FeatureNotInPlan,
            "no_tenant": UnknownTenant,
            "tenant_access_denied": UnknownTenant,
            "store_unavailable": StoreUnavailable,
        }
        if code in by_code:
            return by_code[code](f"{status}: {message}")
        raise AssertionError(f"an answer the surface does not know: {status} {body}")


class DecoratorSurface(HttpSurface):
    """A view decorated with ``@require_quota("api_calls", quantity=<the site's callable>)``."""

    name = "decorator"
    operations = frozenset({CONSUME})
    proofs = frozenset({"over_admission", "threshold_signals", "bad_input"})
    # A decorator names its feature in code; these are refused when the view is decorated
    # (ValueError at import), before any request can reach it.
    not_decorated = frozenset({"empty feature", "None feature", "numeric feature"})

    def inapplicable(self, value_name: str) -> str | None:
        if value_name == "zero":
            return "a quantity callable's 0 counts nothing and lets the request through, by design"
        if value_name in self.not_decorated:
            return "require_quota() refuses this feature name when the view is decorated"
        if value_name.startswith("idempotency key"):
            return "a decorated view takes no idempotency key"
        return super().inapplicable(value_name)

    def call(
        self, operation: str, tenant: Any, feature: Any, quantity: Any, **options: Any
    ) -> Admission:
        assert operation == CONSUME, operation
        assert not options, options
        token = uuid.uuid4().hex
        edges.register_call(token, feature, quantity)
        try:
            response = self.client().get(
                "/decorated/",
                headers={"X-Tenant": self.tenant_header(tenant), edges.CALL_HEADER: token},
            )
        finally:
            edges.forget_call(token)
        return self.read(response)


class ApiSurface(HttpSurface):
    """``POST /api/usage/events/``: ``enforce: true`` consumes, ``enforce: false`` records.

    The API requires an idempotency key; a call without one gets a fresh key (a client sends a
    new key per event). A JSON client cannot send NaN, infinity or a ``Decimal``: those rows are
    proved at the engine, and NaN in a body is refused as a parse error (test_edges.py).
    """

    name = "api"
    operations = frozenset({CONSUME, INCREMENT})
    proofs = frozenset(
        {"over_admission", "lost_updates", "idempotency_storm", "threshold_signals", "bad_input"}
    )
    # Unlike the other edges, the API counts through the batch path (record_events), whose order
    # of key claim and count differs by store: its load proofs run on the Redis store too.
    load_stores = None
    not_json = frozenset({"NaN", "infinity", "Decimal", "Decimal NaN"})

    def inapplicable(self, value_name: str) -> str | None:
        if value_name in self.not_json:
            return "not a JSON value"
        return super().inapplicable(value_name)

    def call(
        self, operation: str, tenant: Any, feature: Any, quantity: Any, **options: Any
    ) -> Admission:
        assert operation in (CONSUME, INCREMENT)
        event = {
            "feature": feature,
            "quantity": quantity,
            "idempotency_key": options.pop("idempotency_key", f"call-{uuid.uuid4().hex}"),
            "enforce": operation == CONSUME,
        }
        assert not options, options
        response = self.client().post(
            "/api/usage/events/",
            data=json.dumps(event),
            content_type="application/json",
            headers={"X-Tenant": self.tenant_header(tenant)},
        )
        return self.read(response)

    def error(self, status: int, body: dict[str, Any]) -> UsageLimitsError:
        if status == 400 and body.get("code") == "invalid":
            fields = body.get("errors", {})
            if "quantity" in fields:
                return InvalidQuantity(str(fields["quantity"]))
            if "idempotency_key" in fields:
                return InvalidIdempotencyKey(str(fields["idempotency_key"]))
            if "feature" in fields:
                message = str(fields["feature"])
                if "does not include" in message:
                    return FeatureNotInPlan(message)
                if "boolean feature" in message:
                    return WrongFeatureKind(message)
                return UnknownFeature(message)
        return super().error(status, body)


SURFACES: list[Surface] = [EngineSurface(), DecoratorSurface(), ApiSurface()]
