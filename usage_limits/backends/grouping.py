"""Counts that threads of one process make on the same counter at the same moment, as one change.

One tenant's counter is one row, and on a durable database every change holds the row's lock
until its commit reached the disk: the tenant's requests take turns, one commit each. When several
threads of a web worker count on that row at once, all but one would wait for the lock anyway.
Instead they wait here, and the first of them to be due sends all their units in one guarded
statement (one commit), then hands each its own share of the result in arrival order, as if the
changes had run one after the other.

Exactness does not depend on the grouping: the group's statement is guarded like a single one
(``used <= limit - total``), and when the group's total does not fit, its counts run one by one
in arrival order, each guarded, so that exactly as many are admitted as would have been without
grouping. Every member learns the value before and after its own units, so threshold signals
still fire once.

Only counts made outside any transaction are grouped (a count in the caller's transaction must
commit or roll back with it), and a thread that finds nobody counting goes straight to the
database: without contention this adds two lock acquisitions and nothing else. A group is sent
with one ``apply`` (the one of the count that sends it), so the store keys guarded counts and
unguarded ones (recorded usage) apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace

from django.db.backends.base.base import BaseDatabaseWrapper

from usage_limits.backends.base import CounterChange, CounterKey
from usage_limits.conf import conf


@dataclass(eq=False, slots=True)
class PendingCount:
    """One thread's count, waiting for the thread that sends its group."""

    quantity: int
    limit: int
    due: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to send the group it belongs to, rather than with its result
    change: CounterChange | None = None
    error: BaseException | None = None

    def outcome(self) -> CounterChange:
        if self.error is not None:
            raise self.error
        change = self.change
        if change is None:  # a member is woken only once it has one or the other
            raise RuntimeError("A grouped count was woken without its result.")
        return change


# apply(quantity, limit): one guarded change of the counter, run by the calling thread.
Apply = Callable[[int, int], CounterChange]


class CountGroups:
    """Groups the concurrent counts of one process, per counter (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # counter -> counts waiting for it; a counter is present while a thread is sending to it
        self._waiting: dict[Hashable, list[PendingCount]] = {}

    def consume(self, counter: Hashable, quantity: int, limit: int, apply: Apply) -> CounterChange:
        with self._lock:
            waiting = self._waiting.get(counter)
            if waiting is None:
                self._waiting[counter] = []  # this thread sends; later ones wait
                mine = None
            else:
                mine = PendingCount(quantity, limit)
                waiting.append(mine)
        if mine is None:
            try:
                return apply(quantity, limit)
            finally:
                self._hand_over(counter)
        mine.due.wait()
        if mine.leads:
            with self._lock:
                group = self._waiting[counter]
                self._waiting[counter] = []
            try:
                _send(group, apply)
            finally:
                self._hand_over(counter)
                for member in group:
                    if member is not mine:
                        member.due.set()
        return mine.outcome()

    def waiting(self) -> int:
        """How many counts wait for a thread to send them, over all counters (for tests)."""
        with self._lock:
            return sum(len(counts) for counts in self._waiting.values())

    def _hand_over(self, counter: Hashable) -> None:
        """Wake the first count waiting to send its group, or mark the counter free."""
        with self._lock:
            waiting = self._waiting[counter]
            if waiting:
                first = waiting[0]
                first.leads = True
                first.due.set()
            else:
                del self._waiting[counter]


_groups = CountGroups()


def count(
    kind: str,
    connection: BaseDatabaseWrapper,
    key: CounterKey,
    quantity: int,
    limit: int,
    apply: Apply,
) -> CounterChange:
    """``apply(quantity, limit)`` for a store, grouped with this process's concurrent counts of
    the same ``kind`` on the same counter when outside any transaction of ``connection`` (the
    counters' database, as the store found it: a count inside the caller's transaction must
    commit or roll back with it)."""
    if (
        conf.GROUP_CONCURRENT_COUNTS
        and not connection.in_atomic_block
        and connection.get_autocommit()
    ):
        counter = (kind, connection.alias, key.tenant_id, key.feature, key.period.start)
        return _groups.consume(counter, quantity, limit, apply)
    return apply(quantity, limit)


def waiting() -> int:
    """How many counts of this process wait for a thread to send them (for tests)."""
    return _groups.waiting()


def _send(group: list[PendingCount], apply: Apply) -> None:
    """Give every member of ``group`` its change or its error; never raise."""
    try:
        limit = group[0].limit
        total = sum(member.quantity for member in group)
        # A total above the limit cannot fit (and might not fit the counter's column either).
        if len(group) > 1 and total <= limit and all(m.limit == limit for m in group):
            change = apply(total, limit)
            if change.applied:
                before = change.before
                for member in group:
                    after = before + member.quantity
                    member.change = replace(change, before=before, after=after)
                    before = after
                return
        # One by one: a group whose total does not fit (some of its counts may), a lone count,
        # or counts checked against different limits (a plan changed meanwhile).
        for member in group:
            member.change = apply(member.quantity, member.limit)
    except BaseException as exc:  # handed to every member still without a change
        for member in group:
            if member.change is None:
                member.error = exc
