"""The default store: counters are rows of :class:`~usage_limits.models.UsageRecord`.

The hot path (``consume``, ``increment``) is one guarded statement per vendor, run through the
connection named by ``USAGE_LIMITS["DATABASE_ALIAS"]``:

* PostgreSQL and SQLite (3.35+): ``UPDATE ... RETURNING``; a denial reads the value in a second
  statement.
* MariaDB / MySQL have no ``UPDATE ... RETURNING``: ``SET used = LAST_INSERT_ID(used + q)`` makes
  the server send the new value back in the statement's OK packet (``cursor.lastrowid``), and the
  matched-row count says whether the guard passed.

Daily history (``USAGE_LIMITS["HISTORY"]``) is kept by the same unit of work: on PostgreSQL the
guarded UPDATE's ``RETURNING`` feeds an ``INSERT ... ON CONFLICT DO UPDATE`` into today's bucket in
a data-modifying CTE, so it is still one statement; on SQLite and MariaDB the bucket's upsert is a
second statement in the same transaction, run only when the UPDATE applied.

The period's row is created only when the UPDATE matched nothing (an insert that ignores a
conflicting concurrent insert, then the UPDATE again), so a steady-state call burns no sequence
values. Rarely-used operations (refund, set, reset) lock the row inside a transaction and compute
the new value in SQL.

Failures: a dropped or failing connection (Django's ``OperationalError`` / ``InterfaceError``) is
raised as :class:`~usage_limits.exceptions.StoreUnavailable`, and the broken connection is closed
so that the next call reconnects. The statement that failed did not count unless the connection
dropped after the server committed it and before the answer arrived: a caller that retries after
``StoreUnavailable`` should pass an idempotency key to be exact in that case too. An increment that
would overflow the 64-bit counter raises :class:`~usage_limits.exceptions.InvalidQuantity` and
counts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import date, datetime
from functools import reduce
from operator import or_
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.utils import timezone

from usage_limits.backends.base import CounterChange, CounterKey, UsageStore, usage_day
from usage_limits.conf import conf
from usage_limits.exceptions import InvalidQuantity, StaleRules, StoreUnavailable, UnknownTenant
from usage_limits.models import Tenant, UsageDailyBucket, UsageRecord
from usage_limits.periods import ALL_TIME

# Counters are BIGINT columns; an increment that would pass this is refused, never wrapped.
MAX_COUNTER = 2**63 - 1

# A statement (or the store's own transaction) chosen as a deadlock's victim runs this often.
_DEADLOCK_ATTEMPTS = 3

T = TypeVar("T")


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is the database choosing a transaction as a victim."""
    cause: BaseException | None = exc
    while cause is not None:
        if getattr(cause, "sqlstate", None) in {"40P01", "40001"}:  # PostgreSQL
            return True
        args: tuple[Any, ...] = tuple(getattr(cause, "args", ()))
        if args and args[0] in {1205, 1213}:  # MySQL / MariaDB: lock wait, deadlock
            return True
        cause = cause.__cause__
    return False


# A guarded UPDATE that loses a race with the period row's creation is retried this often.
_MAX_ATTEMPTS = 5

_KEY_WHERE = "tenant_id = %s AND feature = %s AND period_start = %s"


@dataclass(frozen=True)
class _Statements:
    guarded_add: str
    add: str
    read: str
    read_checked: str
    insert_missing: str
    lock_and_read: str
    touch: str | None  # SQLite: take the write lock before reading (see _locked_change)
    subtract: str
    assign: str
    # history: add to / take from today's bucket
    bucket_add: str
    bucket_subtract: str
    # PostgreSQL only: the hot-path statements with the bucket's upsert folded in
    guarded_add_with_history: str | None = None
    add_with_history: str | None = None


_BUCKET_WHERE = "tenant_id = %s AND feature = %s AND day = %s"


def _statements(connection: BaseDatabaseWrapper, *, checked: bool) -> _Statements:
    """The store's statements for ``connection``; ``checked``: the counting ones also compare
    the tenant's ``rules_version`` with a parameter (two more, at the end of the UPDATE's)."""
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    tenants = connection.ops.quote_name(Tenant._meta.db_table)
    version_check = (
        f" AND (SELECT rules_version FROM {tenants} WHERE id = %s) = %s" if checked else ""
    )
    columns = (
        "tenant_id, feature, period_key, period_start, period_end, used, created_at, updated_at"
    )
    vendor = connection.vendor
    # Rarer changes lock the row by its key, then change it by its primary key: their UPDATE then
    # locks nothing more of the table. Through the key again, MariaDB may pick another index
    # for it than a concurrent count's UPDATE picked (one locks that index, then the row; the
    # other the row, then that index): a deadlock between a refund and a count.
    subtract = (
        f"UPDATE {table} SET used = CASE WHEN used > %s THEN used - %s ELSE 0 END, "
        f"updated_at = %s WHERE id = %s"
    )
    assign = f"UPDATE {table} SET used = %s, updated_at = %s WHERE id = %s"
    read = f"SELECT used FROM {table} WHERE {_KEY_WHERE}"
    locked_read = f"SELECT id, used FROM {table} WHERE {_KEY_WHERE}"
    # The denial path of a checked count: the value, and the version it was checked against.
    read_checked = (
        f"SELECT (SELECT used FROM {table} WHERE {_KEY_WHERE}), "
        f"(SELECT rules_version FROM {tenants} WHERE id = %s)"
    )
    bucket = connection.ops.quote_name(UsageDailyBucket._meta.db_table)
    bucket_columns = "tenant_id, feature, day, used"
    bucket_subtract = (
        f"UPDATE {bucket} SET used = CASE WHEN used > %s THEN used - %s ELSE 0 END "
        f"WHERE {_BUCKET_WHERE}"
    )
    bucket_upsert = (
        f"INSERT INTO {bucket} ({bucket_columns}) {{values}} "
        f"ON CONFLICT (tenant_id, feature, day) DO UPDATE SET used = {bucket}.used + EXCLUDED.used"
    )
    if vendor == "mysql":
        return _Statements(
            guarded_add=(
                f"UPDATE {table} SET used = LAST_INSERT_ID(used + %s), updated_at = %s "
                f"WHERE {_KEY_WHERE} AND used <= %s{version_check}"
            ),
            add=(
                f"UPDATE {table} SET used = LAST_INSERT_ID(used + %s), updated_at = %s "
                f"WHERE {_KEY_WHERE} AND used <= %s{version_check}"
            ),
            read=read,
            read_checked=read_checked,
            # Not INSERT IGNORE: that would also swallow a foreign-key error for a deleted tenant.
            insert_missing=(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, 0, %s, %s) "
                "ON DUPLICATE KEY UPDATE id = id"
            ),
            lock_and_read=f"{locked_read} FOR UPDATE",
            touch=None,
            subtract=subtract,
            assign=assign,
            bucket_add=(
                f"INSERT INTO {bucket} ({bucket_columns}) VALUES (%s, %s, %s, %s) "
                "ON DUPLICATE KEY UPDATE used = used + VALUES(used)"
            ),
            bucket_subtract=bucket_subtract,
        )
    insert_missing = (
        f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, 0, %s, %s) "
        "ON CONFLICT (tenant_id, feature, period_start) DO NOTHING"
    )
    add = (
        f"UPDATE {table} SET used = used + %s, updated_at = %s "
        f"WHERE {_KEY_WHERE} AND used <= %s{version_check} RETURNING used"
    )
    if vendor == "postgresql":
        guarded_update = (
            f"UPDATE {table} SET used = used + %s, updated_at = %s "
            f"WHERE {_KEY_WHERE} AND used <= %s{version_check} RETURNING used, tenant_id, feature"
        )
        # A data-modifying CTE runs even though the final SELECT does not read it; it inserts
        # one bucket row when ``changed`` has one (the guard passed) and nothing otherwise.
        into_bucket = "bucket AS ({}) ".format(
            bucket_upsert.format(
                values="SELECT tenant_id, feature, CAST(%s AS date), CAST(%s AS bigint) "
                "FROM changed"
            )
        )
        # Not a CTE that also reads the value when the guard fails: measured through Django's
        # (client-side binding) cursor, that statement cost ~200 us against ~120 us for the
        # plain UPDATE, on every allowed request; a denial now reads the value separately.
        guarded_add = (
            f"UPDATE {table} SET used = used + %s, updated_at = %s "
            f"WHERE {_KEY_WHERE} AND used <= %s{version_check} RETURNING used"
        )
        add_returning = (
            f"UPDATE {table} SET used = used + %s, updated_at = %s WHERE {_KEY_WHERE} "
            f"AND used <= %s{version_check} RETURNING used, tenant_id, feature"
        )
        return _Statements(
            guarded_add=guarded_add,
            add=add,
            read=read,
            read_checked=read_checked,
            insert_missing=insert_missing,
            lock_and_read=f"{locked_read} FOR UPDATE",
            touch=None,
            subtract=subtract,
            assign=assign,
            bucket_add=bucket_upsert.format(values="VALUES (%s, %s, %s, %s)"),
            bucket_subtract=bucket_subtract,
            guarded_add_with_history=(
                f"WITH changed AS ({guarded_update}), {into_bucket}SELECT used FROM changed"
            ),
            add_with_history=(
                f"WITH changed AS ({add_returning}), {into_bucket}SELECT used FROM changed"
            ),
        )
    # SQLite (and any other vendor with UPDATE ... RETURNING and ON CONFLICT).
    return _Statements(
        guarded_add=(
            f"UPDATE {table} SET used = used + %s, updated_at = %s "
            f"WHERE {_KEY_WHERE} AND used <= %s{version_check} RETURNING used"
        ),
        add=add,
        read=read,
        read_checked=read_checked,
        insert_missing=insert_missing,
        lock_and_read=locked_read,
        # SQLite has no row locks: a write first takes the database's write lock, so the read
        # that follows cannot go stale and a deferred transaction cannot fail to upgrade.
        touch=f"UPDATE {table} SET updated_at = updated_at WHERE {_KEY_WHERE}",
        subtract=subtract,
        assign=assign,
        bucket_add=bucket_upsert.format(values="VALUES (%s, %s, %s, %s)"),
        bucket_subtract=bucket_subtract,
    )


_cache: dict[tuple[str, str, bool], _Statements] = {}


class DatabaseStore(UsageStore):
    """Counters in the ``usage_limits_usagerecord`` table, one atomic statement per change."""

    @property
    def alias(self) -> str:
        return conf.DATABASE_ALIAS

    def _connection(self, *, checked: bool = False) -> tuple[BaseDatabaseWrapper, _Statements]:
        alias = conf.DATABASE_ALIAS
        connection = connections[alias]
        cache_key = (alias, connection.vendor, checked)
        statements = _cache.get(cache_key)
        if statements is None:
            statements = _cache[cache_key] = _statements(connection, checked=checked)
        return connection, statements

    @contextmanager
    def _unavailable_on_connection_loss(self) -> Iterator[None]:
        """Report a lost or failing database as :class:`StoreUnavailable` (see :meth:`_lost`)."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise self._lost(exc) from exc

    def _run(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, again when the database chose it as a deadlock's victim.

        A victim's statement (or its own transaction) was rolled back whole, so running it again
        is safe; inside the caller's transaction the whole of that was rolled back instead, and
        the error goes up (the engine runs its own transactions again). Two changes of one
        counter that lock in opposite orders (MariaDB: a refund's read and a count's update) no
        longer turn into a 503 or a lost refund.
        """
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                with self._unavailable_on_connection_loss():
                    return operation()
            except StoreUnavailable as exc:
                retry = attempt < _DEADLOCK_ATTEMPTS and is_deadlock(exc)
                if not retry or connections[self.alias].in_atomic_block:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, exc: Exception) -> StoreUnavailable:
        """The error to raise for a lost or failing database, after recovering from it.

        Django only replaces a broken connection at the start and end of a request; a worker,
        a command or a thread outside the request cycle would otherwise fail on every later call.
        So, outside a transaction, a connection that no longer works is closed here and the next
        call opens a new one. Inside the caller's transaction Django already rolls back and
        closes it when the outermost ``atomic`` block exits.
        """
        connection = connections[self.alias]
        if not connection.in_atomic_block:
            with suppress(DatabaseError):
                connection.close_if_unusable_or_obsolete()
        return StoreUnavailable(f"The usage store (database {self.alias!r}) is unavailable: {exc}")

    @staticmethod
    def _key_params(connection: BaseDatabaseWrapper, key: CounterKey) -> list[Any]:
        return [key.tenant_id, key.feature, _db_datetime(connection, key.period.start)]

    # --- the hot path -----------------------------------------------------------------------

    def consume(
        self, key: CounterKey, quantity: int, limit: int | None, *, rules_version: int | None = None
    ) -> CounterChange:
        if limit is None:
            return self.increment(key, quantity, rules_version=rules_version)
        return self._run(lambda: self._consume(key, quantity, limit, rules_version))

    def _consume(
        self, key: CounterKey, quantity: int, limit: int, rules_version: int | None
    ) -> CounterChange:
        connection, sql = self._connection(checked=rules_version is not None)
        now = timezone.now()
        history = _History.of(sql, now, key)
        key_params = self._key_params(connection, key)
        # "used <= limit - quantity" rather than "used + quantity <= limit": the sum could
        # overflow a BIGINT on a counter already far into overage.
        params = [quantity, _db_datetime(connection, now), *key_params, limit - quantity]
        params += _version_params(key, rules_version)
        if history.folded and sql.guarded_add_with_history is not None:
            statement = sql.guarded_add_with_history
            params += history.folded_params(quantity)
        else:
            statement = sql.guarded_add
        # SQLite and MariaDB write today's bucket in a second statement, in one transaction with
        # the counter's; otherwise the guarded UPDATE is the whole unit of work.
        bucket_apart = history.enabled and not history.folded
        value = 0
        with connection.cursor() as cursor:
            for _attempt in range(_MAX_ATTEMPTS):
                if bucket_apart:
                    # One transaction per attempt, and the period row's creation outside it:
                    # holding the counter's lock while inserting a missing row deadlocks InnoDB
                    # under concurrent first use.
                    with history.transaction(self.alias):
                        result = _guarded_add(
                            connection, sql, cursor, statement, params, key, rules_version
                        )
                        if result is not None and result[0]:
                            history.add(connection, sql, cursor, key, quantity)
                else:
                    result = _guarded_add(
                        connection, sql, cursor, statement, params, key, rules_version
                    )
                if result is None:
                    # First use of the period: create its row (a concurrent creator wins
                    # harmlessly) and run the guarded UPDATE again.
                    self._insert_missing(connection, sql, cursor, key)
                    continue
                applied, value = result
                if applied:
                    return CounterChange(applied=True, before=value - quantity, after=value)
                if value + quantity > limit:
                    break
                # The UPDATE ran before a concurrent insert (or refund) that the read then saw:
                # the denial is not justified by the value read, so try again.
            return CounterChange(applied=False, before=value, after=value)

    def increment(
        self, key: CounterKey, quantity: int, *, rules_version: int | None = None
    ) -> CounterChange:
        change = self._run(lambda: self._increment(key, quantity, rules_version))
        if not change.applied:
            raise InvalidQuantity(
                f"Adding {quantity} to {key.feature} (now {change.after}) would overflow the "
                f"counter's maximum of {MAX_COUNTER}; nothing was counted."
            )
        return change

    def _increment(
        self, key: CounterKey, quantity: int, rules_version: int | None
    ) -> CounterChange:
        """Add ``quantity`` unless the sum would pass the counter's maximum."""
        limit = MAX_COUNTER
        connection, sql = self._connection(checked=rules_version is not None)
        now = timezone.now()
        history = _History.of(sql, now, key)
        version = _version_params(key, rules_version)
        with connection.cursor() as cursor:
            after = self._counted_add(
                connection, sql, cursor, key, quantity, limit, now, history, version
            )
            if after is None:
                if rules_version is not None:
                    # Nothing matched: a missing row, or rules that are no longer current.
                    _read_checked(connection, sql, cursor, key, rules_version)
                self._insert_missing(connection, sql, cursor, key)
                after = self._counted_add(
                    connection, sql, cursor, key, quantity, limit, now, history, version
                )
            if after is None:
                # The row exists (it was just inserted) but the sum would not fit: SQLite would
                # silently turn it into a float, the others raise a vendor error.
                cursor.execute(sql.read, self._key_params(connection, key))
                row = cursor.fetchone()
                used = 0 if row is None else int(row[0])
                return CounterChange(applied=False, before=used, after=used)
        return CounterChange(applied=True, before=after - quantity, after=after)

    def _counted_add(
        self,
        connection: BaseDatabaseWrapper,
        sql: _Statements,
        cursor: Any,
        key: CounterKey,
        quantity: int,
        limit: int,
        now: datetime,
        history: _History,
        version: list[Any],
    ) -> int | None:
        with history.transaction(self.alias):
            after = self._add(connection, sql, cursor, key, quantity, limit, now, history, version)
            if after is not None:
                history.add(connection, sql, cursor, key, quantity)
        return after

    def _add(
        self,
        connection: BaseDatabaseWrapper,
        sql: _Statements,
        cursor: Any,
        key: CounterKey,
        quantity: int,
        limit: int,
        now: datetime,
        history: _History,
        version: list[Any],
    ) -> int | None:
        params = [
            quantity,
            _db_datetime(connection, now),
            *self._key_params(connection, key),
            limit - quantity,
            *version,
        ]
        if history.folded and sql.add_with_history is not None:
            cursor.execute(sql.add_with_history, [*params, *history.folded_params(quantity)])
        else:
            cursor.execute(sql.add, params)
        if connection.vendor == "mysql":
            return int(cursor.lastrowid) if cursor.rowcount == 1 else None
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def _insert_missing(
        self, connection: BaseDatabaseWrapper, sql: _Statements, cursor: Any, key: CounterKey
    ) -> None:
        now = _db_datetime(connection, timezone.now())
        period = key.period
        end = None if period.end is None else _db_datetime(connection, period.end)
        cursor.execute(
            sql.insert_missing,
            [
                key.tenant_id,
                key.feature,
                period.key,
                _db_datetime(connection, period.start),
                end,
                now,
                now,
            ],
        )

    # --- rarer changes: lock the row, compute the new value in SQL ----------------------------

    def refund(self, key: CounterKey, quantity: int) -> CounterChange:
        def change(
            connection: BaseDatabaseWrapper, sql: _Statements, cursor: Any, row_id: int, before: int
        ) -> int:
            now = timezone.now()
            cursor.execute(
                sql.subtract, [quantity, quantity, _db_datetime(connection, now), row_id]
            )
            after = max(before - quantity, 0)
            # Same transaction as the counter; takes back from today's bucket only what the
            # counter gave back, and never below zero.
            _History.of(sql, now, key).subtract(connection, sql, cursor, key, before - after)
            return after

        return self._locked_change(key, change, create=False)

    def set(self, key: CounterKey, value: int) -> CounterChange:
        def change(
            connection: BaseDatabaseWrapper, sql: _Statements, cursor: Any, row_id: int, before: int
        ) -> int:
            now = _db_datetime(connection, timezone.now())
            cursor.execute(sql.assign, [value, now, row_id])
            return value

        return self._locked_change(key, change, create=True)

    def reset(self, key: CounterKey) -> CounterChange:
        def change(
            connection: BaseDatabaseWrapper, sql: _Statements, cursor: Any, row_id: int, before: int
        ) -> int:
            now = _db_datetime(connection, timezone.now())
            cursor.execute(sql.assign, [0, now, row_id])
            return 0

        return self._locked_change(key, change, create=False)

    def _locked_change(self, key: CounterKey, change: Any, *, create: bool) -> CounterChange:
        return self._run(lambda: self._locked_change_once(key, change, create=create))

    def _locked_change_once(self, key: CounterKey, change: Any, *, create: bool) -> CounterChange:
        connection, sql = self._connection()
        key_params = self._key_params(connection, key)
        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
            if create:
                self._insert_missing(connection, sql, cursor, key)
            if sql.touch is not None:
                cursor.execute(sql.touch, key_params)
            cursor.execute(sql.lock_and_read, key_params)
            row = cursor.fetchone()
            if row is None:
                return CounterChange(applied=False, before=0, after=0)
            row_id, before = int(row[0]), int(row[1])
            after = change(connection, sql, cursor, row_id, before)
        return CounterChange(applied=True, before=before, after=after)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, key: CounterKey) -> int:
        with self._unavailable_on_connection_loss():
            connection, sql = self._connection()
            with connection.cursor() as cursor:
                cursor.execute(sql.read, self._key_params(connection, key))
                row = cursor.fetchone()
        return 0 if row is None else int(row[0])

    def get_many(self, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
        keys = list(keys)
        if not keys:
            return {}
        wanted = {(k.tenant_id, k.feature, k.period.start): k for k in keys}
        condition = reduce(
            or_,
            (Q(tenant_id=t, feature=f, period_start=s) for (t, f, s) in wanted),
        )
        rows = (
            UsageRecord.objects.using(self.alias)
            .filter(condition)
            .values_list("tenant_id", "feature", "period_start", "used")
        )
        values = dict.fromkeys(keys, 0)
        with self._unavailable_on_connection_loss():
            for tenant_id, feature, start, used in rows:
                key = wanted.get((tenant_id, feature, start))
                if key is not None:
                    values[key] = int(used)
        return values


def _db_datetime(connection: BaseDatabaseWrapper, value: datetime) -> Any:
    """``value`` as the ORM sends it, so that raw statements match the rows the ORM wrote."""
    return connection.ops.adapt_datetimefield_value(value)


def _guarded_add(
    connection: BaseDatabaseWrapper,
    sql: _Statements,
    cursor: Any,
    statement: str,
    params: list[Any],
    key: CounterKey,
    rules_version: int | None,
) -> tuple[bool, int] | None:
    """Run the guarded UPDATE: ``(applied, value)``, or ``None`` when the period's row does not
    exist yet. A denial reads the value in a second statement (and, for a checked count, the
    tenant's version: :class:`StaleRules` when it moved)."""
    cursor.execute(statement, params)
    if connection.vendor == "mysql":
        if cursor.rowcount == 1:
            return True, int(cursor.lastrowid)
    else:
        row = cursor.fetchone()
        if row is not None:
            return True, int(row[0])
    if rules_version is not None:
        used = _read_checked(connection, sql, cursor, key, rules_version)
    else:
        cursor.execute(sql.read, DatabaseStore._key_params(connection, key))
        row = cursor.fetchone()
        used = None if row is None else row[0]
    return None if used is None else (False, int(used))


def _version_params(key: CounterKey, rules_version: int | None) -> list[Any]:
    return [] if rules_version is None else [key.tenant_id, rules_version]


def _read_checked(
    connection: BaseDatabaseWrapper, sql: _Statements, cursor: Any, key: CounterKey, version: int
) -> int | None:
    """The counter's value (``None``: no row yet), after checking that ``version`` is still the
    tenant's rules version: :class:`StaleRules` (or :class:`UnknownTenant`) otherwise."""
    cursor.execute(sql.read_checked, [*DatabaseStore._key_params(connection, key), key.tenant_id])
    used, current = cursor.fetchone()
    if current is None:
        raise UnknownTenant(f"No tenant with id {key.tenant_id!r}.")
    if int(current) != version:
        raise StaleRules(
            f"The rules of tenant {key.tenant_id} changed (version {current}, not {version})."
        )
    return None if used is None else int(used)


@dataclass(frozen=True)
class _History:
    """Whether and how a change writes today's bucket (see :mod:`usage_limits.backends.base`)."""

    enabled: bool
    day: date
    folded: bool  # the bucket's upsert rides in the counter's own statement (PostgreSQL)

    @classmethod
    def of(cls, sql: _Statements, now: datetime, key: CounterKey) -> _History:
        # Allocations (seats, projects) are levels, not daily usage: they keep no history, and
        # their changes stay one statement on every database.
        if not conf.HISTORY or key.period.name == ALL_TIME.name:
            return _NO_HISTORY
        folded = sql.guarded_add_with_history is not None
        return cls(enabled=True, day=usage_day(now), folded=folded)

    def transaction(self, alias: str) -> AbstractContextManager[Any]:
        """The transaction that makes counter and bucket one unit, when they are two statements.

        ``savepoint=False``: inside the caller's transaction this adds no SAVEPOINT round trips;
        an error rolls the caller back too, which it would anyway.
        """
        if self.enabled and not self.folded:
            return transaction.atomic(using=alias, savepoint=False)
        return _NO_TRANSACTION

    def folded_params(self, quantity: int) -> list[Any]:
        return [self.day, quantity]

    def add(
        self,
        connection: BaseDatabaseWrapper,
        sql: _Statements,
        cursor: Any,
        key: CounterKey,
        quantity: int,
    ) -> None:
        if self.enabled and not self.folded:
            cursor.execute(
                sql.bucket_add,
                [key.tenant_id, key.feature, _db_date(connection, self.day), quantity],
            )

    def subtract(
        self,
        connection: BaseDatabaseWrapper,
        sql: _Statements,
        cursor: Any,
        key: CounterKey,
        quantity: int,
    ) -> None:
        if self.enabled and quantity > 0:
            day = _db_date(connection, self.day)
            cursor.execute(
                sql.bucket_subtract, [quantity, quantity, key.tenant_id, key.feature, day]
            )


_NO_HISTORY = _History(enabled=False, day=date.min, folded=False)
# One shared instance: nullcontext is reusable, and the hot path then allocates nothing for it.
_NO_TRANSACTION: AbstractContextManager[Any] = nullcontext()


def _db_date(connection: BaseDatabaseWrapper, value: date) -> Any:
    return connection.ops.adapt_datefield_value(value)
