"""The counter stores the reliability suite runs against, as one ``store`` parameter.

Every proof in this package takes the ``store`` fixture (see ``conftest.py``), so a new store is
proved by adding one :class:`StoreTarget` to :data:`STORE_TARGETS`: its settings, how to tell it
is reachable, and how to read a counter *without* going through the store under test (the
proofs compare what the engine reported with what was really written).

A store that keeps its counters somewhere other than the database (Redis) also has a record to
prove: :meth:`StoreTarget.flush` copies the counters into ``UsageRecord`` the way production does,
and :meth:`StoreTarget.record_mismatches` lists every counter whose database copy differs.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connections

from tests.redis_service import REDIS_URL, redis_settings, shared_redis
from usage_limits.backends import CounterKey
from usage_limits.models import UsageRecord


@dataclass(frozen=True)
class StoreTarget:
    """One store as the suite sees it."""

    name: str
    path: str  # USAGE_LIMITS["STORE"]

    def usage_limits_settings(self) -> dict[str, Any]:
        """The ``USAGE_LIMITS`` setting a test runs under (the project's, with this store)."""
        return {**settings.USAGE_LIMITS, "STORE": self.path}

    def unavailable_reason(self) -> str | None:
        """Why the store cannot run here (``None``: it can); the test then skips or fails."""
        return None

    def for_one_test(self) -> StoreTarget:
        """The target a single test runs against (a store with shared state isolates it here)."""
        return self

    def clean_up(self) -> None:
        """Remove whatever :meth:`for_one_test` set aside for the test."""

    def snapshot(self) -> list[tuple[str, str]]:
        """Everything the store holds outside the database, to compare around a refused call."""
        return []

    def flush(self) -> int | None:
        """Copy the store's counters into ``UsageRecord`` as production does; ``None``: the
        rows are the counters already. Returns how many counters were flushed."""
        return None

    def record_mismatches(self, keys: Iterable[CounterKey]) -> list[str]:
        """After :meth:`flush`: every counter whose database row differs from the store."""
        mismatches = []
        for key in keys:
            stored, row = self.stored(key), database_row(key)
            if row != stored:
                mismatches.append(
                    f"{key.tenant_id}/{key.feature}/{key.period.key}: "
                    f"store {stored}, database {row}"
                )
        return mismatches

    def stored(self, key: CounterKey) -> int:
        """The counter as persisted, read independently of the store's own code."""
        raise NotImplementedError

    def database_label(self) -> str:
        """Where the counters of this run live, for the figures ("PostgreSQL 16.4", ...)."""
        return describe_database()


@dataclass(frozen=True)
class DatabaseStoreTarget(StoreTarget):
    """Counters as rows of ``UsageRecord``, on whatever ``DATABASE_URL`` this run uses."""

    def stored(self, key: CounterKey) -> int:
        return database_row(key)


def database_row(key: CounterKey) -> int:
    """The counter's ``UsageRecord`` row (0 when there is none)."""
    row = (
        UsageRecord.objects.filter(
            tenant_id=key.tenant_id, feature=key.feature, period_start=key.period.start
        )
        .values_list("used", flat=True)
        .first()
    )
    return 0 if row is None else int(row)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RedisStoreTarget(StoreTarget):
    """Counters in Redis (``REDIS_URL``, the shared server), written behind to the database.

    Each test gets a key prefix of its own (:meth:`for_one_test`) and its keys are deleted
    afterwards, so tests never see each other's counters (primary keys repeat across tests that
    roll back) and the suite never flushes a Redis database that something else uses.
    """

    url: str = REDIS_URL
    prefix: str = ""

    def usage_limits_settings(self) -> dict[str, Any]:
        return redis_settings(self.url, self.prefix)

    def unavailable_reason(self) -> str | None:
        try:
            import redis
        except ImportError:
            return 'the redis package is not installed (pip install ".[redis]")'
        try:
            redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
        except redis.exceptions.RedisError as exc:
            return f"Redis is not reachable at {self.url}: {exc}"
        return None

    def for_one_test(self) -> RedisStoreTarget:
        return dataclasses.replace(self, prefix=f"uqr{uuid.uuid4().hex[:10]}")

    def clean_up(self) -> None:
        client = shared_redis()
        keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])

    def counter_name(self, key: CounterKey) -> str:
        """The documented key layout (docs/scaling.md), spelled out here rather than taken from
        the store: ``<prefix>:{<tenant id>}:<feature>:<period start, Unix seconds>``."""
        start = key.period.start
        assert start.microsecond == 0, "periods start on whole seconds"
        seconds = int((start - EPOCH).total_seconds())
        return f"{self.prefix}:{{{key.tenant_id}}}:{key.feature}:{seconds}"

    def stored(self, key: CounterKey) -> int:
        value = shared_redis().get(self.counter_name(key))
        return 0 if value is None else int(value)

    def snapshot(self) -> list[tuple[str, str]]:
        client = shared_redis()
        held = []
        for name in sorted(client.scan_iter(match=f"{self.prefix}:*", count=1000)):
            kind = client.type(name)
            value = client.hgetall(name) if kind == "hash" else client.get(name)
            held.append((name, repr(sorted(value.items()) if isinstance(value, dict) else value)))
        return held

    def flush(self) -> int:
        from usage_limits.backends.redis_flush import flush_counters

        return flush_counters().counters

    def database_label(self) -> str:
        version = shared_redis().info("server")["redis_version"]
        return f"{describe_database()} + Redis {version}"


# Each test that takes the ``store`` fixture runs once per store.
STORE_TARGETS: list[StoreTarget] = [
    DatabaseStoreTarget(name="database", path="usage_limits.backends.database.DatabaseStore"),
    RedisStoreTarget(name="redis", path="usage_limits.backends.redis.RedisStore"),
]


def describe_database(alias: str = "default") -> str:
    """Vendor and server version of a database alias, plus the SQLite journal mode."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = str(cursor.fetchone()[0]).split()[0]
            return f"PostgreSQL {version}"
        if connection.vendor == "mysql":
            cursor.execute("SELECT VERSION()")
            version = str(cursor.fetchone()[0])
            name = "MariaDB" if "mariadb" in version.lower() else "MySQL"
            return f"{name} {version.split('-')[0]}"
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            version = str(cursor.fetchone()[0])
            cursor.execute("PRAGMA journal_mode")
            mode = str(cursor.fetchone()[0]).upper()
            return f"SQLite {version} (file, {mode})"
    return connection.vendor
