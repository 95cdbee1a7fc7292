"""Redis going away: each fail mode does what docs/scaling.md promises, and nothing is lost."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require_module

require_module("redis", 'pip install -e ".[redis]"')

from django.core.management import CommandError, call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from usage_limits import consume, get_usage, reset_usage, set_usage  # noqa: E402
from usage_limits.backends import CounterKey, get_store  # noqa: E402
from usage_limits.backends.base import usage_day  # noqa: E402
from usage_limits.backends.redis import RedisStore  # noqa: E402
from usage_limits.backends.redis_flush import flush_counters  # noqa: E402
from usage_limits.exceptions import StoreUnavailable  # noqa: E402
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord, UsageReset  # noqa: E402
from usage_limits.periods import period_containing  # noqa: E402
from usage_limits.testing.factories import TenantFactory, plan_with_limits  # noqa: E402

from .redis_service import PrivateRedis, private_redis, redis_settings  # noqa: E402, F401

pytestmark = pytest.mark.django_db

# Small enough for the tests to be quick, large enough for a loaded two-core machine.
OUTAGE = {
    "REDIS_SOCKET_TIMEOUT": 0.3,
    "REDIS_CONNECT_TIMEOUT": 0.3,
    "REDIS_BREAKER_FAILURES": 3,
    "REDIS_BREAKER_SECONDS": 0.5,
}


def store() -> RedisStore:
    current = get_store()
    assert isinstance(current, RedisStore)
    return current


def used_in_database(tenant: Tenant) -> int:
    return UsageRecord.objects.get(tenant=tenant, feature="api_calls").used


def history_in_database(tenant: Tenant) -> int:
    """The tenant's daily buckets of api_calls, summed (what the history chart shows)."""
    rows = UsageDailyBucket.objects.filter(tenant=tenant, feature="api_calls")
    return sum(rows.values_list("used", flat=True))


def history_seen(tenant: Tenant) -> int:
    """What the store reports for today's bucket (Redis's unflushed part included)."""
    today = usage_day()
    return store().daily_usage(tenant.pk, "api_calls", today, today).get(today, 0)


def redis_value(server: PrivateRedis, tenant: Tenant) -> int:
    client = server.client()
    keys = list(client.scan_iter(match=f"uq:{{{tenant.pk}}}:api_calls:*"))
    assert len(keys) == 1
    return int(client.get(keys[0]) or 0)


def wait_for_the_breaker() -> None:
    time.sleep(OUTAGE["REDIS_BREAKER_SECONDS"] + 0.1)


@pytest.fixture
def big_tenant() -> Tenant:
    return TenantFactory(plan=plan_with_limits("BIG", api_calls=1000))


# --- a private Redis, stopped and started again --------------------------------------------------


def test_fail_open_counts_in_the_database_and_loses_nothing_when_redis_returns(
    settings: Any,
    private_redis: PrivateRedis,  # noqa: F811
    big_tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.USAGE_LIMITS = redis_settings(
        private_redis.url, "uq", REDIS_FAIL_MODE="open", **OUTAGE
    )
    assert [consume(big_tenant, "api_calls").used for _ in range(20)][-1] == 20
    flush_counters()

    private_redis.stop()  # killed: no save, its data is gone
    with caplog.at_level(logging.WARNING, logger="usage_limits"):
        timings = []
        for _ in range(10):
            started = time.monotonic()
            decision = consume(big_tenant, "api_calls")
            timings.append(time.monotonic() - started)
            assert decision.allowed
    assert decision.used == 30  # counted in the database, on top of the flushed 20
    assert used_in_database(big_tenant) == 30
    # Never longer than the timeouts (connect, one retry); most calls skip Redis altogether.
    assert max(timings) < 2 * OUTAGE["REDIS_CONNECT_TIMEOUT"] + 0.5
    assert sum(t > 0.05 for t in timings) <= OUTAGE["REDIS_BREAKER_FAILURES"]
    outage_lines = [r for r in caplog.records if "Redis is unavailable" in r.getMessage()]
    assert len(outage_lines) == 1
    # History keeps answering from the database (the flushed 20 and the 10 counted there).
    assert history_seen(big_tenant) == history_in_database(big_tenant) == 30

    private_redis.start()  # empty
    wait_for_the_breaker()
    assert [consume(big_tenant, "api_calls").used for _ in range(5)] == [31, 32, 33, 34, 35]
    assert history_seen(big_tenant) == 35  # a new bucket in Redis, on top of the row's 30
    flush_counters()
    assert used_in_database(big_tenant) == redis_value(private_redis, big_tenant) == 35
    assert history_in_database(big_tenant) == 35
    flush_counters()
    assert history_in_database(big_tenant) == history_seen(big_tenant) == 35


def test_fail_open_after_a_stall_adds_what_the_database_counted_to_redis(
    settings: Any,
    private_redis: PrivateRedis,  # noqa: F811
    big_tenant: Tenant,
) -> None:
    """Redis stops answering but keeps its data (a stall, a partition): both sides counted."""
    settings.USAGE_LIMITS = redis_settings(
        private_redis.url, "uq", REDIS_FAIL_MODE="open", **OUTAGE
    )
    admitted = sum(consume(big_tenant, "api_calls").allowed for _ in range(20))  # never flushed

    private_redis.freeze()
    admitted += sum(consume(big_tenant, "api_calls").allowed for _ in range(10))
    assert used_in_database(big_tenant) == 10
    private_redis.thaw()
    wait_for_the_breaker()
    admitted += sum(consume(big_tenant, "api_calls").allowed for _ in range(5))
    report = flush_counters()
    assert report.reconciled == 1

    assert admitted == 35
    final = used_in_database(big_tenant)
    assert final == redis_value(private_redis, big_tenant)
    # Nothing is lost. A command that timed out may still run once Redis wakes up, after the
    # database counted it too: at most one per failure before the breaker opened.
    assert admitted <= final <= admitted + OUTAGE["REDIS_BREAKER_FAILURES"]
    assert history_in_database(big_tenant) == history_seen(big_tenant) == final
    assert flush_counters().counters == 0


def test_fail_closed_refuses_at_once_and_resumes_from_the_record(
    settings: Any,
    private_redis: PrivateRedis,  # noqa: F811
    big_tenant: Tenant,
) -> None:
    settings.USAGE_LIMITS = redis_settings(
        private_redis.url, "uq", REDIS_FAIL_MODE="closed", **OUTAGE
    )
    for _ in range(20):
        consume(big_tenant, "api_calls")
    flush_counters()

    private_redis.stop()
    timings = []
    for _ in range(6):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            consume(big_tenant, "api_calls")
        timings.append(time.monotonic() - started)
    assert max(timings) < 2 * OUTAGE["REDIS_CONNECT_TIMEOUT"] + 0.5
    assert max(timings[OUTAGE["REDIS_BREAKER_FAILURES"] :]) < 0.05  # breaker open: no waiting
    assert used_in_database(big_tenant) == 20  # refused means not counted anywhere

    private_redis.start()
    wait_for_the_breaker()
    assert consume(big_tenant, "api_calls").used == 21
    flush_counters()
    assert used_in_database(big_tenant) == redis_value(private_redis, big_tenant) == 21
    assert history_in_database(big_tenant) == 21


def test_a_redis_out_of_memory_is_an_outage_not_an_error(
    settings: Any,
    private_redis: PrivateRedis,  # noqa: F811
    big_tenant: Tenant,
) -> None:
    settings.USAGE_LIMITS = redis_settings(private_redis.url, "uq", **OUTAGE)
    consume(big_tenant, "api_calls")
    private_redis.client().config_set("maxmemory", 1)  # every write now fails with OOM
    decision = consume(big_tenant, "api_calls")
    assert (decision.allowed, decision.used) == (True, 1)  # counted in the database
    private_redis.client().config_set("maxmemory", 0)
    wait_for_the_breaker()
    assert consume(big_tenant, "api_calls").used == 2
    flush_counters()
    assert used_in_database(big_tenant) == redis_value(private_redis, big_tenant) == 3
    assert history_in_database(big_tenant) == 3


# --- Redis that is not there at all, or does not answer -----------------------------------------


@pytest.fixture
def nothing_listening(settings: Any) -> Iterator[str]:
    """A port held by this test and never listened on: every connection is refused."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{reserved.getsockname()[1]}/0"
        settings.USAGE_LIMITS = redis_settings(url, "uq", **OUTAGE)
        yield url


@pytest.mark.usefixtures("nothing_listening")
def test_fail_open_still_enforces_the_limit_from_the_database(settings: Any) -> None:
    tenant = TenantFactory(plan=plan_with_limits("FIVE", api_calls=5))
    decisions = [consume(tenant, "api_calls") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    record = UsageRecord.objects.get(tenant=tenant)
    assert (record.used, record.redis_stale) == (5, True)
    assert get_usage(tenant).feature("api_calls").used == 5
    assert store().breaker.is_open
    assert not store().ping()


@pytest.mark.usefixtures("nothing_listening")
def test_resets_and_sets_wait_for_redis_in_either_mode(settings: Any, tenant: Tenant) -> None:
    for mode in ("open", "closed"):
        settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "REDIS_FAIL_MODE": mode}
        with pytest.raises(StoreUnavailable, match="try again"):
            reset_usage(tenant, "api_calls", reason="support ticket")
        with pytest.raises(StoreUnavailable):
            set_usage(tenant, "seats", 1)
    assert not UsageReset.objects.exists()


@pytest.mark.usefixtures("nothing_listening")
def test_the_flush_command_fails_clearly_without_redis() -> None:
    with pytest.raises(CommandError, match="Redis is unavailable, nothing flushed"):
        call_command("usage_limits_flush")


@pytest.fixture
def silent_server(settings: Any) -> Iterator[str]:
    """A port that accepts connections and never answers (a hung or black-holed Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.USAGE_LIMITS = redis_settings(
        url, "uq", **{**OUTAGE, "REDIS_SOCKET_TIMEOUT": 0.1, "REDIS_CONNECT_TIMEOUT": 0.1}
    )
    yield url
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.usefixtures("silent_server")
def test_a_redis_that_never_answers_costs_a_request_one_timeout(tenant: Tenant) -> None:
    started = time.monotonic()
    decision = consume(tenant, "api_calls")
    elapsed = time.monotonic() - started
    assert decision.allowed
    assert 0.1 <= elapsed < 0.6  # one socket timeout; a timed-out command is not retried


@pytest.mark.usefixtures("silent_server")
def test_a_redis_that_never_answers_is_refused_quickly_when_closed(
    settings: Any, tenant: Tenant
) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "REDIS_FAIL_MODE": "closed"}
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        consume(tenant, "api_calls")
    assert time.monotonic() - started < 0.6


def take_command(buffer: bytearray) -> list[bytes] | None:
    """The first whole command in ``buffer`` (a RESP array of bulk strings), taken out of it."""
    data = bytes(buffer)
    end = data.find(b"\r\n")
    if end < 0:
        return None
    count, at = int(data[1:end]), end + 2
    parts = []
    for _ in range(count):
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        size, at = int(data[at + 1 : end]), end + 2
        if len(data) < at + size + 2:
            return None
        parts.append(data[at : at + size])
        at += size + 2
    del buffer[:at]
    return parts


class LateServer:
    """Speaks just enough RESP: ``+OK`` to a connection's handshake and, to the n-th
    ``EVALSHA``, what the store's counting script answers when it counted from 10n to 10n + 1.
    The first of those replies comes ``delay`` seconds late."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
        self.late_reply_sent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                peer, _address = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, peer: socket.socket) -> None:
        buffer = bytearray()
        with peer:
            while not self.stop.is_set():
                try:
                    data = peer.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while (command := take_command(buffer)) is not None:
                    name = command[0].upper()
                    if name == b"HELLO":  # redis-py 8 speaks RESP3 by default
                        peer.sendall(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                        continue
                    if name != b"EVALSHA":
                        peer.sendall(b"+OK\r\n")
                        continue
                    self.calls += 1
                    calls = self.calls
                    if calls == 1:
                        time.sleep(self.delay)
                    before, after = b"%d" % (10 * calls), b"%d" % (10 * calls + 1)
                    reply = b"*4\r\n:1\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:0\r\n" % (
                        len(before),
                        before,
                        len(after),
                        after,
                    )
                    try:
                        peer.sendall(reply)
                    except OSError:
                        return
                    finally:
                        if calls == 1:
                            self.late_reply_sent.set()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.listener.close()


@pytest.fixture
def late_server(settings: Any) -> Iterator[LateServer]:
    server = LateServer(delay=0.6)
    settings.USAGE_LIMITS = redis_settings(
        server.url, "uq", **{**OUTAGE, "REDIS_SOCKET_TIMEOUT": 0.2, "REDIS_FAIL_MODE": "open"}
    )
    yield server
    server.close()


def test_a_reply_after_the_timeout_is_never_read_as_the_next_commands(
    late_server: LateServer, tenant: Tenant
) -> None:
    key = CounterKey(tenant.pk, "api_calls", period_containing("monthly", timezone.now()))
    started = time.monotonic()
    first = store().increment(key, 1)
    assert time.monotonic() - started < 0.55  # one socket timeout, not retried
    # Timed out: an outage, counted in the database (fail open); not sent to Redis again.
    assert (first.after, first.outside_transaction, late_server.calls) == (1, False, 1)
    assert late_server.late_reply_sent.wait(5)  # to a connection the store has closed
    second = store().increment(key, 1)
    assert (second.before, second.after) == (20, 21)  # the second call's reply, not the first's
    assert late_server.calls == 2


def test_the_breaker_lets_one_call_through_after_its_pause(settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, **OUTAGE}
    breaker = RedisStore().breaker
    for _ in range(3):
        assert breaker.allows_call()
        breaker.record_failure()
    assert not breaker.allows_call()
    wait_for_the_breaker()
    assert breaker.allows_call()
    breaker.record_failure()  # the trial call failed: closed again at once
    assert not breaker.allows_call()
    wait_for_the_breaker()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.allows_call()  # one failure after a success does not open it
