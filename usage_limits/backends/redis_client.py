"""Connecting to Redis with bounded waits, and a circuit breaker for when it is gone.

redis-py's defaults wait seconds on a refused port and about a minute on a black-holed host, per
command; an enforced request must not. Every command here waits at most the socket timeout, is
retried at most ``REDIS_RETRIES`` times, and after ``REDIS_BREAKER_FAILURES`` failures in a row the
store stops calling Redis for ``REDIS_BREAKER_SECONDS`` (each process decides on its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from usage_limits.conf import conf
from usage_limits.exceptions import StoreUnavailable

# Errors that mean "Redis cannot answer now" (as opposed to a bug in a script or an argument).
# BusyLoadingError (a restarted Redis reading its data) is a ConnectionError.
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    # A Redis at its memory limit refuses writes: an outage for counting, not a bug.
    redis_errors.OutOfMemoryError,
    TimeoutError,
)
# Server replies without a class of their own in redis-py that also mean "cannot answer now".
_UNAVAILABLE_REPLIES = ("BUSY ", "NOREPLICAS ", "MASTERDOWN ", "LOADING ")


def is_outage(error: Exception) -> bool:
    """Whether a Redis error means Redis cannot serve now (rather than a mistake in a call)."""
    if isinstance(error, UNAVAILABLE):
        return True
    return isinstance(error, redis_errors.ResponseError) and str(error).startswith(
        _UNAVAILABLE_REPLIES
    )


def connect() -> Any:
    """A client for ``USAGE_LIMITS["REDIS_URL"]`` (or the ``REDIS_URL`` environment variable)."""
    url = conf.REDIS_URL
    if not url:
        raise StoreUnavailable(
            'The Redis store needs USAGE_LIMITS["REDIS_URL"] or the REDIS_URL environment variable.'
        )
    options: dict[str, Any] = {
        "socket_timeout": conf.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": conf.REDIS_CONNECT_TIMEOUT,
        # Retry a command only when the connection failed (a pooled connection that died with a
        # restarted Redis): after a timeout the script may already have counted on the server.
        "retry": Retry(
            NoBackoff(), conf.REDIS_RETRIES, supported_errors=(redis_errors.ConnectionError,)
        ),
        "decode_responses": True,
    }
    if conf.REDIS_CLUSTER:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


class CircuitBreaker:
    """Counts failures in a row; once there are enough, refuses calls for a while.

    After the pause one call goes through again (half-open); if it fails, the pause starts over
    at once, if it succeeds the count starts from zero.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0

    def allows_call(self) -> bool:
        return time.monotonic() >= self._open_until

    @property
    def is_open(self) -> bool:
        return not self.allows_call()

    def record_success(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= conf.REDIS_BREAKER_FAILURES:
                self._open_until = time.monotonic() + conf.REDIS_BREAKER_SECONDS

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0


class OutageLog:
    """Logs an outage once per ``REDIS_FAIL_LOG_INTERVAL`` per process, not once per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = float("-inf")
        self.suppressed = 0

    def should_log(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last >= conf.REDIS_FAIL_LOG_INTERVAL:
                self._last = now
                return True
            self.suppressed += 1
            return False


def run_batch(client: Any, calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Run commands in one round trip (a pipeline), or one by one on Redis Cluster.

    Each call receives the client to send its command through. Cluster pipelines refuse
    ``EVALSHA`` and ``MGET``, so there each command goes to its slot's node by itself.
    """
    if conf.REDIS_CLUSTER:
        return [call(client) for call in calls]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        call(pipe)
    return list(pipe.execute())
