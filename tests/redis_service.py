"""Real Redis for the tests: the shared server (``REDIS_URL``) and private ones a test can stop.

Every test gets its own key prefix on the shared server and removes its keys afterwards, so the
suite never flushes a database that something else uses.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

try:
    import redis
except ImportError:  # the redis extra is not installed: the Redis half of the suite skips
    redis = None  # type: ignore[assignment]

from .conftest import service_missing

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8")
REDIS_STORE = "usage_limits.backends.redis.RedisStore"


def redis_settings(url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    """``USAGE_LIMITS`` of the test settings, switched to the Redis store."""
    return {
        **django_settings.USAGE_LIMITS,
        "STORE": REDIS_STORE,
        "REDIS_URL": url,
        "REDIS_KEY_PREFIX": prefix,
        # Generous: other test runs share this machine's two cores.
        "REDIS_SOCKET_TIMEOUT": 2.0,
        "REDIS_CONNECT_TIMEOUT": 2.0,
        **extra,
    }


def shared_redis() -> redis.Redis:
    if redis is None:
        service_missing('the redis package is not installed (pip install ".[redis]")')
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        service_missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return client


@pytest.fixture
def redis_prefix(settings: Any) -> Iterator[str]:
    """Switch the store to Redis under a key prefix of this test's own; remove its keys after."""
    client = shared_redis()
    prefix = f"uqt{uuid.uuid4().hex[:10]}"
    settings.USAGE_LIMITS = redis_settings(REDIS_URL, prefix)
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def free_port(first: int = 20000, last: int = 29999) -> int:
    """A port nothing listens on, picked at random (parallel runs start private servers too)."""
    while True:
        port = random.randint(first, last)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class PrivateRedis:
    """A redis-server of this test's own, without persistence, that the test may stop.

    The port is chosen on the first start and kept for restarts (the store's URL names it).
    """

    def __init__(self, *, cluster: bool = False) -> None:
        self.cluster = cluster
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = tempfile.mkdtemp(prefix="usage-limits-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if redis is None:
            service_missing('the redis package is not installed (pip install ".[redis]")')
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server is not installed")
            return
        for _attempt in range(5 if self.port == 0 else 1):
            port = self.port or free_port()
            if self._start_on(binary, port):
                self.port = port
                return
        raise RuntimeError("could not start a private redis-server")

    def _start_on(self, binary: str, port: int) -> bool:
        """Start on ``port``; False when another server got the port first."""
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                *(
                    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                    if self.cluster
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                return False  # it exited: the port was taken
            try:
                server_pid = client.info("server")["process_id"]
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    process.kill()
                    raise
                time.sleep(0.05)
        if server_pid != process.pid:  # somebody else's server answers on this port
            process.kill()
            process.wait(10)
            return False
        self.process = process
        if self.cluster:
            # A one-node cluster: this node serves every slot.
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the private Redis Cluster did not become ready")
                time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Kill it: no shutdown, no save; its data is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        """Stop it answering while it keeps its data (a stalled or partitioned server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def close(self) -> None:
        if self.process is not None:
            self.thaw()
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_cluster() -> Iterator[PrivateRedis]:
    server = PrivateRedis(cluster=True)
    server.start()
    yield server
    server.close()
