"""Breaking the store's connections from outside, the way an operator or a failover would.

A :class:`ConnectionKiller` holds its own administrative connection and terminates other
sessions on the server: ``pg_terminate_backend`` on PostgreSQL, ``KILL CONNECTION`` on MariaDB.
SQLite has no server and no connection to lose, so it has no killer. A Redis store would add a
fault of its own (stopping the server) beside this one.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

KILLABLE_VENDORS = ("postgresql", "mysql")


def session_id(connection: BaseDatabaseWrapper) -> int:
    """The server's id of a Django connection's session (opening it if needed)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        else:
            cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


class ConnectionKiller:
    """Terminates sessions of the test database from a connection of its own."""

    def __init__(self, alias: str = "default") -> None:
        self.admin = connections.create_connection(alias)
        # Used from the test's thread and from a chaos thread, never from both at once.
        self.admin.inc_thread_sharing()
        self.vendor = self.admin.vendor
        self.own_id = session_id(self.admin)
        self.kills = 0

    def kill(self, session: int) -> None:
        with self.admin.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute("SELECT pg_terminate_backend(%s)", [session])
            else:
                cursor.execute(f"KILL CONNECTION {int(session)}")
        self.kills += 1
        self._wait_until_gone(session)

    def kill_any(self, spare: set[int]) -> bool:
        """Kill one random session of this database, except ours and ``spare``."""
        victims = [s for s in self.sessions() if s != self.own_id and s not in spare]
        if not victims:
            return False
        try:
            self.kill(victims[int(time.perf_counter_ns()) % len(victims)])
        except DatabaseError:
            return False  # it ended by itself in between (MariaDB: "Unknown thread id")
        return True

    def sessions(self) -> list[int]:
        with self.admin.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                )
            else:
                cursor.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                    "AND command <> 'Killed'"
                )
            return [int(row[0]) for row in cursor.fetchall()]

    def waiting_for_a_lock(self, session: int) -> bool:
        """Whether ``session`` is blocked on a row lock right now."""
        with self.admin.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [session]
                )
                row: Any = cursor.fetchone()
                return row is not None and row[0] == "Lock"
            # innodb_trx can lag behind; the processlist shows the UPDATE that cannot finish.
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.processlist "
                "WHERE id = %s AND command = 'Query' AND info LIKE 'UPDATE%%'",
                [session],
            )
            return int(cursor.fetchone()[0]) > 0

    def describe(self, sessions: list[int]) -> list[tuple[Any, ...]]:
        """What the server says the given sessions are doing (for failure messages)."""
        if not sessions:
            return []
        with self.admin.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute(
                    "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
                    "WHERE pid = ANY(%s)",
                    [sessions],
                )
            else:
                cursor.execute(
                    "SELECT id, command, state, info FROM information_schema.processlist "
                    "WHERE db = DATABASE()"
                )
            return [tuple(row) for row in cursor.fetchall() if int(row[0]) in sessions]

    def _wait_until_gone(self, session: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while session in self.sessions() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.admin.close()
        self.admin.dec_thread_sharing()
