"""Period rollover under load: consumes in flight while the clock crosses a period boundary.

The clock is frozen a moment before a boundary; 16 threads consume in a loop, and the thread
that makes the 64th attempt moves the clock onto the boundary while the others keep going, so
requests straddle it. ``time_machine`` patches the clock of every thread at once, so the move is
seen by all of them from that instant. Afterwards:

* each request was counted in the period it reported, and each period's row holds exactly the
  units admitted in it (nothing leaked across the boundary);
* each period admitted ``min(limit, attempts in it)``: the old period's exhaustion does not
  carry over;
* the new period started at zero with no job or command run: its admitted requests saw 1..n.

On the Redis store the rows are written by the flush (run here as production would, after the
load); each row must then equal the counter read straight from Redis.

The boundaries cover a calendar month, a year end, a billing month anchored on the 31st (clamped
to February 28) and a day in Europe/Berlin that is 23 hours long (DST).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from usage_limits.backends import CounterKey
from usage_limits.models import Plan, UsageRecord
from usage_limits.periods import Period
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .figures import Figures
from .stores import StoreTarget
from .surfaces import Admission, Surface

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16
ATTEMPTS_EACH = 8
ATTEMPTS = THREADS * ATTEMPTS_EACH
LIMIT = 40
# The attempt that moves the clock: early (the old period still has room, so its writes are in
# flight at the boundary), midway, and late (the old period was exhausted before the boundary).
MOVE_POINTS = (32, 64, 96)
ROUNDS_PER_POINT = 3


@dataclass(frozen=True)
class Boundary:
    name: str
    period: str
    boundary: datetime  # the first instant of the new period, in UTC
    old_key: str
    new_key: str
    time_zone: str = "UTC"
    anchor: datetime | None = None


BOUNDARIES = [
    Boundary("calendar-month", "monthly", datetime(2027, 2, 1, tzinfo=UTC), "2027-01", "2027-02"),
    Boundary("year-end", "monthly", datetime(2027, 1, 1, tzinfo=UTC), "2026-12", "2027-01"),
    Boundary(
        "billing-month-31st",
        "billing_monthly",
        datetime(2027, 2, 28, 9, 30, tzinfo=UTC),
        "2027-01",
        "2027-02",
        anchor=datetime(2026, 12, 31, 9, 30, tzinfo=UTC),
    ),
    Boundary(
        "berlin-dst-day",
        "daily",
        # Midnight of 2027-03-28 in Berlin is still CET (UTC+1); that day has 23 hours.
        datetime(2027, 3, 27, 23, 0, tzinfo=UTC),
        "2027-03-27",
        "2027-03-28",
        time_zone="Europe/Berlin",
    ),
]


@dataclass
class Tally:
    attempts: Counter[str]
    admitted: Counter[str]
    stored: Counter[str]
    in_flight: int = 0  # requests that began before the boundary and returned after it


def straddle(
    case: Boundary,
    traveller: time_machine.Coordinates,
    crew: Crew,
    store: StoreTarget,
    surface: Surface,
    plan: Plan,
    move_at: int,
) -> Tally:
    """One round: a fresh tenant, the clock just before the boundary, moved mid-load."""
    traveller.move_to(case.boundary - timedelta(milliseconds=1))
    tenant = TenantFactory(plan=plan, billing_anchor=case.anchor)
    numbering = threading.Lock()
    attempts = [0]

    def work(_: int) -> list[tuple[bool, Admission]]:
        outcomes = []
        for _ in range(ATTEMPTS_EACH):
            with numbering:
                attempts[0] += 1
                number = attempts[0]
            if number == move_at:
                traveller.move_to(case.boundary)
            began = timezone.now()
            outcome = surface.consume(tenant.pk, "api_calls", 1)
            outcomes.append((began < case.boundary <= timezone.now(), outcome))
        return outcomes

    timed = [pair for batch in crew.run(work) for pair in batch]
    outcomes = [o for _, o in timed]
    store.flush()
    rows = list(UsageRecord.objects.filter(tenant=tenant, feature="api_calls"))
    for row in rows:
        period = Period(case.period, row.period_key, row.period_start, row.period_end)
        in_store = store.stored(CounterKey(tenant.pk, "api_calls", period))
        assert row.used == in_store, (row.period_key, row.used, in_store)
    tally = Tally(
        attempts=Counter(str(o.period_key) for o in outcomes),
        admitted=Counter(str(o.period_key) for o in outcomes if o.admitted),
        stored=Counter({r.period_key: r.used for r in rows}),
        in_flight=sum(1 for straddled, _ in timed if straddled),
    )

    assert set(tally.attempts) == {case.old_key, case.new_key}, dict(tally.attempts)
    assert set(tally.stored) <= {case.old_key, case.new_key}, dict(tally.stored)
    for row in rows:
        if row.period_key == case.new_key:
            assert row.period_start == case.boundary
        else:
            assert row.period_end == case.boundary
    for key in (case.old_key, case.new_key):
        assert tally.admitted[key] == min(LIMIT, tally.attempts[key]), (key, tally)
        assert tally.stored[key] == tally.admitted[key], (key, tally)
    new_seen = sorted(o.used or 0 for o in outcomes if o.admitted and o.period_key == case.new_key)
    assert new_seen == list(range(1, tally.admitted[case.new_key] + 1))
    return tally


@pytest.mark.parametrize("case", BOUNDARIES, ids=lambda case: case.name)
def test_consumes_straddling_a_boundary_land_in_their_own_period(
    case: Boundary,
    store: StoreTarget,
    surface: Surface,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    limits = {**settings.USAGE_LIMITS, "TIME_ZONE": case.time_zone}
    total = Tally(Counter(), Counter(), Counter())
    started = time.perf_counter()
    with (
        override_settings(USAGE_LIMITS=limits),
        time_machine.travel(case.boundary - timedelta(days=1), tick=False) as traveller,
    ):
        plan = plan_with_limits(f"ROLL-{case.name}", period=case.period, api_calls=LIMIT)
        crew = crew_of(THREADS)
        rounds = [point for point in MOVE_POINTS for _ in range(ROUNDS_PER_POINT)]
        for move_at in rounds:
            tally = straddle(case, traveller, crew, store, surface, plan, move_at)
            total.attempts += tally.attempts
            total.admitted += tally.admitted
            total.stored += tally.stored
            total.in_flight += tally.in_flight

    old, new = case.old_key, case.new_key
    figures.record(
        "period_rollover",
        store.name,
        store.database_label(),
        variant=case.name,
        surface=surface.name,
        rounds=len(rounds),
        threads=THREADS,
        attempts=len(rounds) * ATTEMPTS,
        old_period_attempts=total.attempts[old],
        old_period_admitted=total.admitted[old],
        old_period_stored=total.stored[old],
        new_period_attempts=total.attempts[new],
        new_period_admitted=total.admitted[new],
        new_period_stored=total.stored[new],
        in_flight_at_boundary=total.in_flight,
        leaked=abs(total.stored[old] - total.admitted[old])
        + abs(total.stored[new] - total.admitted[new]),
        seconds=round(time.perf_counter() - started, 1),
    )
