"""Errors raised by the engine for input it will not count.

Every error is raised *before* any counter changes, so catching one means nothing was recorded.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied


class UsageLimitsError(Exception):
    """Base class of every error the app raises on purpose."""


class InvalidQuantity(UsageLimitsError, ValueError):
    """A quantity that is not a positive whole number within range (0, -1, 1.5, True, 2**63...)."""


class InvalidIdempotencyKey(UsageLimitsError, ValueError):
    """An idempotency key that is not a string of 1 to 100 characters."""


class UnknownFeature(UsageLimitsError, LookupError):
    """A feature name that no plan and no ``USAGE_LIMITS["FEATURES"]`` entry declares."""


class FeatureNotInPlan(UsageLimitsError, LookupError):
    """A known feature that the tenant's plan does not list (and no override grants)."""


class WrongFeatureKind(UsageLimitsError, TypeError):
    """An operation that does not apply to the feature's kind (e.g. counting a boolean feature)."""


class UnknownTenant(UsageLimitsError, LookupError):
    """A tenant (or tenant id) that does not exist."""


class UnknownEvent(UsageLimitsError, LookupError):
    """No usage of the feature was counted for the tenant under the idempotency key given."""


class StoreUnavailable(UsageLimitsError):
    """The counter store could not be reached (a Redis outage, a dropped database connection)."""


class StaleRules(UsageLimitsError):
    """A count was refused because the tenant's rules changed since they were read.

    Raised by a store when the tenant's ``rules_version`` is no longer the one given; nothing was
    counted. The engine reads the rules again and retries, so callers of ``consume()`` never see
    it unless the rules keep changing under every retry.
    """


class IdempotencyKeyReused(UsageLimitsError, ValueError):
    """An idempotency key came again with another feature or quantity than the first time.

    A retry must repeat the request it retries; anything else is a client's mistake that a
    replay would hide (the answer would be the first request's). Nothing was counted. ``errors``
    maps the event's index in its batch (0 for a single count) to what differs.
    """

    def __init__(self, errors: dict[int, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"event {i}: {m}" for i, m in sorted(errors.items())))


class InvalidEvents(UsageLimitsError, ValueError):
    """A batch of usage events that will not be recorded, with what is wrong with each event.

    ``errors`` maps an event's index in the batch to ``{field: message}``. Nothing in the batch was
    counted: a batch is validated whole before anything changes.
    """

    def __init__(self, errors: dict[int, dict[str, str]]) -> None:
        self.errors = errors
        first = min(errors)
        detail = "; ".join(f"{field}: {message}" for field, message in errors[first].items())
        super().__init__(f"{len(errors)} invalid event(s); event {first}: {detail}")


class TenantAccessDenied(UsageLimitsError, PermissionDenied):
    """A request asked for a tenant (by header, subdomain...) that its user is not a member of.

    Enforcement answers 403 and counts nothing; a resolver raises it instead of guessing. It is a
    ``PermissionDenied``, so reading ``request.tenant`` in a view also ends in Django's 403.
    """
