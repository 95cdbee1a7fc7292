"""The counter stores the reliability suite runs against, as one ``store`` parameter.

Every proof in this package takes the ``store`` fixture (see ``conftest.py``), so a new store is
proved by adding one :class:`StoreTarget` to :data:`STORE_TARGETS`: its settings, how to tell it
is reachable, and how to read a counter *without* going through the store under test (the
proofs compare what the engine reported with what was really written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

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
        row = (
            UsageRecord.objects.filter(
                tenant_id=key.tenant_id, feature=key.feature, period_start=key.period.start
            )
            .values_list("used", flat=True)
            .first()
        )
        return 0 if row is None else int(row)


# Further stores (e.g. a Redis store) join here; each test then runs once per store.
STORE_TARGETS: list[StoreTarget] = [
    DatabaseStoreTarget(name="database", path="usage_limits.backends.database.DatabaseStore"),
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
