"""The Redis store's hot-path connection (``redis_client.ScriptRunner`` and its wire).

Every test runs twice: on the wire's own path (hiredis writes and reads the connection's socket)
and on redis-py's ``send_command`` / ``read_response``, which the wire falls back to without
hiredis. Both must answer exactly as redis-py's client does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import require_module
from .redis_service import REDIS_URL, shared_redis

redis = require_module("redis", 'pip install -e ".[redis]"')
hiredis = pytest.importorskip("hiredis", reason="the wire's own path needs hiredis")

from redis import exceptions as redis_errors  # noqa: E402

from usage_limits.backends import redis_client  # noqa: E402
from usage_limits.backends.redis_client import ScriptRunner  # noqa: E402

COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
PAIR = "return {tonumber(redis.call('INCRBY', KEYS[1], ARGV[1])), ARGV[2]}"
FAIL = "return redis.error_reply('WRONGTHING ' .. ARGV[1])"
# On a RESP3 connection (redis-py 8's default) this answers RESP3's false, "#f".
FALSE = "redis.setresp(3); return false"


@pytest.fixture(params=["own", "redis-py"])
def wire_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "redis-py":
        monkeypatch.setattr(redis_client, "_hiredis", None)
    return str(request.param)


@pytest.fixture
def client(wire_path: str) -> Iterator[Any]:
    shared_redis()  # skips (or fails, where CI expects Redis) when the server is not there
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=1)
    key = f"wire-test:{{{time.monotonic_ns()}}}"
    client.delete(key)
    client.test_key = key
    yield client
    client.delete(key)
    client.close()


def test_the_wire_takes_the_path_it_should(client: Any, wire_path: str) -> None:
    runner = ScriptRunner(client)
    assert runner(client.register_script(COUNT), [client.test_key], [1]) == 1
    assert runner._wire().fast is (wire_path == "own")


def test_replies_are_what_the_client_returns(client: Any) -> None:
    runner = ScriptRunner(client)
    script = client.register_script(PAIR)
    key = client.test_key
    assert runner(script, [key], [5, "naïve"]) == [5, "naïve"]
    assert script(keys=[key], args=[5, "naïve"]) == [10, "naïve"]
    assert runner(script, [key], [10**12, ""]) == [10**12 + 10, ""]


def test_a_false_reply_is_a_reply_not_a_wait(client: Any) -> None:
    """RESP3's false is a whole reply, never read as "more to come" (which would wait for the
    socket timeout and then fail a command that had answered)."""
    runner = ScriptRunner(client)
    script = client.register_script(FALSE)
    started = time.monotonic()
    answer = runner(script, [client.test_key], [])
    assert time.monotonic() - started < 0.5
    assert answer == script(keys=[client.test_key])
    assert answer in (False, None)  # RESP3, RESP2


def test_an_empty_script_cache_is_filled_again_and_counts_once(client: Any) -> None:
    runner = ScriptRunner(client)
    script = client.register_script(COUNT)
    runner(script, [client.test_key], [1])
    client.script_flush()
    assert runner(script, [client.test_key], [1]) == 2
    assert int(client.get(client.test_key)) == 2


def test_an_error_reply_is_raised_as_redis_py_raises_it_and_the_wire_stays_usable(
    client: Any,
) -> None:
    runner = ScriptRunner(client)
    with pytest.raises(redis_errors.ResponseError, match="WRONGTHING 7"):
        runner(client.register_script(FAIL), [client.test_key], [7])
    connection = runner._connection()
    assert runner(client.register_script(COUNT), [client.test_key], [3]) == 3
    assert runner._connection() is connection


def test_a_connection_the_server_closed_is_opened_again_and_counts_once(client: Any) -> None:
    runner = ScriptRunner(client)
    script = client.register_script(COUNT)
    runner(script, [client.test_key], [1])
    connection = runner._connection()
    connection.send_command("CLIENT", "ID")
    assert client.client_kill_filter(_id=connection.read_response()) == 1
    assert runner(script, [client.test_key], [1]) == 2
    assert int(client.get(client.test_key)) == 2


# --- a server that answers late -----------------------------------------------------------------


class LateServer:
    """Speaks just enough RESP: ``+OK`` to the connection's handshake, and to each ``EVALSHA``
    the number of script calls so far, the first one ``delay`` seconds late."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0
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
        reader = hiredis.Reader()
        with peer:
            while not self.stop.is_set():
                try:
                    data = peer.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    name = command[0].upper()
                    if name == b"HELLO":  # redis-py 8 speaks RESP3 by default
                        peer.sendall(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                        continue
                    if name != b"EVALSHA":
                        peer.sendall(b"+OK\r\n")
                        continue
                    self.calls += 1
                    if self.calls == 1:
                        time.sleep(self.delay)
                    try:
                        peer.sendall(b":%d\r\n" % self.calls)
                    except OSError:
                        return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.listener.close()


@pytest.fixture
def late_server(wire_path: str) -> Iterator[LateServer]:
    server = LateServer(delay=0.5)
    yield server
    server.close()


def test_a_timed_out_reply_is_never_read_as_the_next_commands(late_server: LateServer) -> None:
    client = redis.Redis.from_url(late_server.url, socket_timeout=0.2, decode_responses=True)
    runner = ScriptRunner(client)
    script = client.register_script(COUNT)
    started = time.monotonic()
    with pytest.raises(redis_errors.TimeoutError):
        runner(script, ["k"], [1])
    assert time.monotonic() - started < 0.45  # one socket timeout, not retried
    time.sleep(0.5)  # the late reply (1) has been sent by now, to a connection that is closed
    assert runner(script, ["k"], [1]) == 2
