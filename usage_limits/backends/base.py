"""The contract every counter store keeps.

A store owns the counters and nothing else: it knows no plans, tenants or signals. Each method is
one atomic operation in the store (one conditional statement, one Lua script); the engine never
reads a counter, compares in Python and writes it back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from usage_limits.periods import Period


@dataclass(frozen=True, slots=True)
class CounterKey:
    tenant_id: int
    feature: str
    period: Period


@dataclass(frozen=True, slots=True)
class CounterChange:
    """What one atomic operation did: whether it applied, and the value before and after it."""

    applied: bool
    before: int
    after: int


class UsageStore(ABC):
    """A place where usage counters live (the database by default, or Redis)."""

    @abstractmethod
    def consume(self, key: CounterKey, quantity: int, limit: int | None) -> CounterChange:
        """Add ``quantity`` only if the result stays within ``limit`` (``None``: unlimited).

        Denied means nothing was added; ``before == after`` is then the current value.
        """

    @abstractmethod
    def increment(self, key: CounterKey, quantity: int) -> CounterChange:
        """Add ``quantity`` unconditionally (usage recorded after the fact may run over)."""

    @abstractmethod
    def refund(self, key: CounterKey, quantity: int) -> CounterChange:
        """Take back up to ``quantity``; the counter never goes below zero."""

    @abstractmethod
    def set(self, key: CounterKey, value: int) -> CounterChange:
        """Set the counter to ``value`` (allocations such as seats, corrections)."""

    @abstractmethod
    def reset(self, key: CounterKey) -> CounterChange:
        """Set the counter to zero, returning what it read before."""

    @abstractmethod
    def get(self, key: CounterKey) -> int:
        """The current value (0 when the counter was never written)."""

    def get_many(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        """Current values of several counters; stores override this with one round trip."""
        return {key: self.get(key) for key in keys}
