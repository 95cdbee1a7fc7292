"""Store faults: database connections killed between calls, mid-statement and under load.

What a user must be able to rely on when the database drops a connection:

* the call that was hit raises :class:`~usage_limits.exceptions.StoreUnavailable` (a clear,
  catchable error that an edge turns into its documented fail mode), never a wrong answer;
* the next call reconnects by itself and counts correctly, even outside a request (a worker);
* no unit is lost or doubled: with idempotency keys the counter ends equal to the admitted
  requests exactly; without them, a unit can only be counted for a caller who got an error (the
  connection dropped after the server committed), never lost, and the limit is never exceeded.

Runs on PostgreSQL (``pg_terminate_backend``) and MariaDB (``KILL CONNECTION``); SQLite has no
connection to lose.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from django.db import DatabaseError, close_old_connections, connection, connections

from usage_limits import consume
from usage_limits.backends import CounterKey
from usage_limits.exceptions import StoreUnavailable
from usage_limits.models import Tenant, UsageEvent
from usage_limits.periods import current_period
from usage_limits.testing.factories import TenantFactory, plan_with_limits

from .crew import Crew
from .faults import KILLABLE_VENDORS, ConnectionKiller, session_id
from .figures import Figures
from .stores import StoreTarget

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def killer(store: StoreTarget) -> Iterator[ConnectionKiller]:
    if store.name != "database":
        pytest.skip("connection kills apply to the database store")
    if connection.vendor not in KILLABLE_VENDORS:
        pytest.skip(f"{connection.vendor} has no server connection to kill")
    made = ConnectionKiller()
    yield made
    made.close()
    connection.close_if_unusable_or_obsolete()


def counter(tenant: Tenant) -> CounterKey:
    return CounterKey(tenant.pk, "api_calls", current_period("monthly"))


def test_a_connection_killed_between_calls_fails_one_call_then_reconnects(
    store: StoreTarget, killer: ConnectionKiller
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FAULT", api_calls=10))
    for _ in range(3):
        assert consume(tenant.pk, "api_calls").allowed
    killer.kill(session_id(connection))

    with pytest.raises(StoreUnavailable, match="unavailable"):
        consume(tenant.pk, "api_calls")

    # No request cycle ran in between: the store itself replaced the broken connection.
    assert store.stored(counter(tenant)) == 3
    decision = consume(tenant.pk, "api_calls")
    assert (decision.allowed, decision.used) == (True, 4)
    assert store.stored(counter(tenant)) == 4


@pytest.mark.parametrize("with_key", [False, True], ids=["plain", "idempotency-key"])
def test_a_connection_killed_mid_statement_counts_nothing_and_the_retry_counts_once(
    with_key: bool, store: StoreTarget, killer: ConnectionKiller
) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FAULT", api_calls=10))
    consume(tenant.pk, "api_calls")  # the period's row exists
    key = counter(tenant)
    options = {"idempotency_key": "order-1"} if with_key else {}

    # Another session holds the counter's row lock, so the consume below waits inside its
    # UPDATE until the session running it is killed.
    blocker = connections.create_connection("default")
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute(
            "SELECT used FROM usage_limits_usagerecord WHERE tenant_id = %s FOR UPDATE",
            [tenant.pk],
        )
    outcome: list[BaseException | object] = []
    sessions: list[int] = []

    def request() -> None:
        try:
            sessions.append(session_id(connections["default"]))
            outcome.append(consume(tenant.pk, "api_calls", 2, **options))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    worker = threading.Thread(target=request)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not (sessions and killer.waiting_for_a_lock(sessions[0])):
            assert time.monotonic() < deadline, (
                f"the consume never blocked on the row lock: {sessions}, {outcome}, "
                f"{killer.describe(sessions)}"
            )
            time.sleep(0.01)
        killer.kill(sessions[0])
        worker.join(10)
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(10)

    assert len(outcome) == 1
    assert isinstance(outcome[0], StoreUnavailable), outcome[0]
    assert store.stored(key) == 1, "the killed statement must not have counted"
    retried = consume(tenant.pk, "api_calls", 2, **options)
    assert (retried.allowed, retried.used, retried.replayed) == (True, 3, False)
    assert store.stored(key) == 3
    if with_key:
        assert UsageEvent.objects.filter(tenant=tenant, idempotency_key="order-1").count() == 1


THREADS = 16
REQUESTS_EACH = 60
LIMIT = 600
KILL_EVERY = 0.03  # seconds


@pytest.mark.parametrize("with_keys", [True, False], ids=["idempotency-keys", "no-keys"])
def test_connections_killed_under_load_lose_and_double_nothing(
    with_keys: bool,
    store: StoreTarget,
    killer: ConnectionKiller,
    crew_of: Callable[[int], Crew],
    figures: Figures,
) -> None:
    tenant_id = TenantFactory(plan=plan_with_limits("CHAOS", api_calls=LIMIT)).pk
    key = counter(Tenant(pk=tenant_id))
    crew = crew_of(THREADS)
    main_session = session_id(connection)
    done = threading.Event()
    errors: list[str] = []
    lock = threading.Lock()

    def kill_now_and_then() -> None:
        rng = random.Random(7)
        while not done.wait(KILL_EVERY * rng.uniform(0.5, 1.5)):
            killer.kill_any(spare={main_session})

    def work(worker: int) -> list[tuple[bool, bool]]:
        answers = []
        for number in range(REQUESTS_EACH):
            options = {"idempotency_key": f"w{worker}-r{number}"} if with_keys else {}
            while True:
                # What Django does at the start of every request: drop a connection it saw fail.
                close_old_connections()
                try:
                    decision = consume(tenant_id, "api_calls", 1, **options)
                except (StoreUnavailable, DatabaseError) as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                    if not with_keys:
                        break  # the caller gave up on this one: its outcome is unknown
                    continue  # retry the same request, under the same key
                answers.append((decision.allowed, decision.replayed))
                break
        return answers

    chaos = threading.Thread(target=kill_now_and_then)
    started = time.perf_counter()
    chaos.start()
    try:
        answers = [a for batch in crew.run(work) for a in batch]
    finally:
        done.set()
        chaos.join()
    elapsed = time.perf_counter() - started
    close_old_connections()

    requests = THREADS * REQUESTS_EACH
    admitted = sum(allowed for allowed, _ in answers)
    replayed = sum(replay for _, replay in answers)
    stored = store.stored(key)
    unanswered = requests - len(answers)
    figures.record(
        "store_faults",
        store.name,
        store.database_label(),
        variant="idempotency keys, retried" if with_keys else "no keys, not retried",
        threads=THREADS,
        requests=requests,
        limit=LIMIT,
        kills=killer.kills,
        errors=len(errors),
        errors_by_type=dict(sorted(Counter(errors).items())),
        answered=len(answers),
        admitted=admitted,
        replayed=replayed,
        stored=stored,
        lost=max(admitted - stored, 0),
        counted_for_an_error=max(stored - admitted, 0),
        seconds=round(elapsed, 1),
    )
    assert killer.kills > 0
    assert stored <= LIMIT
    if with_keys:
        assert len(answers) == requests, "every request is answered in the end"
        assert admitted == min(LIMIT, requests)
        assert stored == admitted
        assert UsageEvent.objects.filter(tenant_id=tenant_id).count() == requests
    else:
        assert stored >= admitted, "an admitted unit was lost"
        # Only a caller who got an error can have been counted without being told.
        assert stored - admitted <= unanswered
