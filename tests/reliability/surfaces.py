"""The ways a caller reaches the quota engine, as one ``surface`` parameter.

The engine is the first surface. An edge (a view decorator, the REST API) joins by adding a
:class:`Surface` to :data:`SURFACES` that performs the same operations through its own door and
reports them in the same terms: an :class:`Admission` when the call went through, or the
library's own exception class when it was refused (an HTTP surface maps its error response back
to the class it stands for, e.g. a 400 with ``"code": "invalid_quantity"`` to
:class:`~usage_limits.exceptions.InvalidQuantity`). The proofs then run once per surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from usage_limits import check_limit, consume, increment_usage, refund, reset_usage, set_usage
from usage_limits.results import Decision

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


class Surface:
    """A door to the engine. Subclasses implement the operations listed in ``operations``."""

    name: str = ""
    operations: frozenset[str] = frozenset()

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


# Further surfaces (a decorated view, the REST API) join here.
SURFACES: list[Surface] = [EngineSurface()]
