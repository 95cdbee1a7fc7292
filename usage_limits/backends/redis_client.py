"""Connecting to Redis with bounded waits, and a circuit breaker for when it is gone.

redis-py's defaults wait seconds on a refused port and about a minute on a black-holed host, per
command; an enforced request must not. Every command here waits at most the socket timeout, is
retried at most ``REDIS_RETRIES`` times, and after ``REDIS_BREAKER_FAILURES`` failures in a row the
store stops calling Redis for ``REDIS_BREAKER_SECONDS`` (each process decides on its own).
"""

from __future__ import annotations

import os
import socket
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

try:  # the C reply parser (the "redis" extra installs it); without it the wire is redis-py's
    import hiredis as _hiredis
    from redis._parsers import BaseParser
except ImportError:  # pragma: no cover - installs without hiredis
    _hiredis = None  # type: ignore[assignment]
# RESP3 (redis-py 8's default) may slip a push message in before a reply; hiredis tells them
# apart from 3.2 on. Without that type the wire's own path serves RESP2 connections only.
_PUSH: Any = getattr(_hiredis, "PushNotification", None)

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
# What one read from a wire's socket asks for (redis-py's own read size).
_READ_SIZE = 65536
# What a wire's reader answers while a reply is incomplete: hiredis's default, False, is also a
# whole RESP3 reply (a script returning a missing key's value, for one).
_INCOMPLETE = object()

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


class ScriptRunner:
    """Runs the store's scripts with ``EVALSHA`` on a connection each thread keeps for itself.

    redis-py's ``Script.__call__`` takes a connection from the pool and gives it back on every
    call; with its bookkeeping (locks, a check for unread data, metrics) that costs about twice
    the CPU of the command itself. The hot path instead keeps one connection per thread (and per
    process: a forked child opens its own) and talks to it directly (see :class:`_Wire`).
    Timeouts, the retry of a command whose connection failed and the script cache being empty (a
    restarted Redis) behave as through the client. Redis Cluster goes through the client (it
    routes by slot).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._local = threading.local()
        self._direct = not isinstance(client, RedisCluster)

    def _wire(self) -> _Wire:
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            pool = self._client.connection_pool
            local.wire = _Wire(pool.connection_class(**pool.connection_kwargs))
            local.pid = pid
        wire: _Wire = local.wire
        return wire

    def _connection(self) -> Any:
        """This thread's redis-py connection (connected on its first command)."""
        return self._wire().connection

    def __call__(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        if not self._direct:
            return script(keys=keys, args=args)
        wire = self._wire()
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        failures = 0
        loaded = False
        while True:
            try:
                return wire.call(command)
            except redis_errors.NoScriptError:
                if loaded:
                    raise
                loaded = True
                wire.call(("SCRIPT", "LOAD", script.script))
            except redis_errors.ConnectionError:
                # Same rule as the client's Retry: only a failed connection is tried again.
                wire.close()
                failures += 1
                if failures > conf.REDIS_RETRIES:
                    raise


class _Wire:
    """One thread's connection, spoken to without redis-py's per-command layers.

    redis-py's ``Connection`` opens the socket and does everything a connection needs before its
    first command (TLS, AUTH, SELECT, the protocol's handshake, the socket timeouts). After that,
    with hiredis installed, a command is packed by hiredis, written to the connection's socket
    and its reply read by a hiredis reader of the wire's own. That skips, on every call,
    redis-py's argument checks, its metrics hooks and its reader's own wrapping: a hot counter
    driven by 2 processes of 3 threads each went from 14,000-16,900 to 20,200-24,000 script calls
    a second (docs/scaling.md). Without hiredis the connection's ``send_command`` and
    ``read_response`` do the same work.

    The wire answers as the connection would: a timeout raises redis-py's ``TimeoutError`` and a
    failed socket its ``ConnectionError``, both after closing the connection (a late reply must
    never be read as the next command's); an error reply raises the exception redis-py raises
    for it (``NoScriptError``, ``ReadOnlyError``, ``OutOfMemoryError``...), the connection staying
    usable.
    """

    __slots__ = ("connection", "fast", "reader", "socket")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        protocol = str(getattr(connection, "protocol", None) or 2)
        self.fast = _hiredis is not None and (protocol == "2" or _PUSH is not None)
        self.socket: Any = None
        self.reader: Any = None

    def call(self, command: tuple[Any, ...]) -> Any:
        if self.fast:
            sock = self.socket
            if sock is None or sock is not getattr(self.connection, "_sock", None):
                sock = self._open()
            if sock is not None:
                return self._call_on(sock, command)
        self.connection.send_command(*command, check_health=False)
        return self.connection.read_response()

    def _call_on(self, sock: Any, command: tuple[Any, ...]) -> Any:
        try:
            sock.sendall(_hiredis.pack_command(command))
            reader = self.reader
            while True:
                data = sock.recv(_READ_SIZE)
                if not data:
                    raise redis_errors.ConnectionError("Redis closed the connection.")
                reader.feed(data)
                reply = reader.gets()
                # A push (RESP3: a notification nobody on this connection asked for) is not
                # the reply; redis-py's handlers for them serve the client's pooled connections.
                while _PUSH is not None and isinstance(reply, _PUSH):
                    reply = reader.gets()
                if reply is not _INCOMPLETE:
                    break
        except BaseException as exc:
            self.close()
            if isinstance(exc, socket.timeout):
                raise redis_errors.TimeoutError("Timeout talking to Redis.") from exc
            if isinstance(exc, OSError):
                raise redis_errors.ConnectionError(f"Error talking to Redis: {exc}") from exc
            raise
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _open(self) -> Any:
        """The connection's socket, connecting first if needed, with a new reader; ``None``
        when this redis-py keeps no ``_sock`` (the wire then stays on redis-py's path)."""
        connection = self.connection
        if getattr(connection, "_sock", None) is None:
            connection.connect()
        sock = getattr(connection, "_sock", None)
        if sock is None:
            self.fast = False
            return None
        encoder = connection.encoder
        options: dict[str, Any] = {
            "replyError": BaseParser.parse_error,
            "protocolError": redis_errors.InvalidResponse,
            "notEnoughData": _INCOMPLETE,
        }
        if encoder.decode_responses:
            options.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
        self.reader = _hiredis.Reader(**options)
        self.socket = sock
        return sock

    def close(self) -> None:
        self.socket = None
        self.reader = None
        self.connection.disconnect()


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
