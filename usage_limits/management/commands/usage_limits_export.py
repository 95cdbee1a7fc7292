from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q, QuerySet

from usage_limits.models import UNLIMITED, UsageRecord
from usage_limits.numbers import primary_key
from usage_limits.reporting import current_counters, with_effective_limits

HEADER = (
    "tenant_id",
    "tenant_slug",
    "tenant_name",
    "plan",
    "feature",
    "period",
    "period_start",
    "period_end",
    "used",
    "limit",
)
FIELDS = (
    "tenant_id",
    "tenant__slug",
    "tenant__name",
    "tenant__plan__code",
    "feature",
    "period_key",
    "period_start",
    "period_end",
    "used",
    "effective_limit",
    "in_plan",
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _timestamp(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _limit(value: int | None, in_plan: bool) -> str:
    if not in_plan:
        return ""  # the tenant's plan no longer has this feature
    return str(UNLIMITED if value is None else value)


class Command(BaseCommand):
    help = (
        "Export usage per tenant, feature and period as CSV (to stdout, or --output FILE), "
        "streamed from the database. 'plan' and 'limit' are the tenant's today: -1 unlimited, "
        "empty when its plan no longer has the feature."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", help="Write the CSV to this file (default: stdout).")
        parser.add_argument("--tenant", help="Only this tenant (slug or id).")
        parser.add_argument("--feature", help="Only this feature.")
        parser.add_argument(
            "--since",
            type=date.fromisoformat,
            help="Only periods starting on or after this date (YYYY-MM-DD, UTC).",
        )
        parser.add_argument(
            "--current",
            action="store_true",
            help="Only the counters of the periods running now (and open-ended ones).",
        )
        parser.add_argument(
            "--progress-every",
            type=int,
            default=10_000,
            help="Print a progress line to stderr every N rows (default 10000; 0: never).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        records = self._records(options)
        started = time.monotonic()
        total = records.count()
        output: str | None = options["output"]
        if output:
            with Path(output).open("w", newline="", encoding="utf-8") as stream:
                written, tenants, features = self._write(stream, records, total, options)
            report = self.stdout
        else:
            written, tenants, features = self._write(self.stdout, records, total, options)
            self.stdout.flush()
            report = self.stderr  # stdout is the CSV: keep it clean
        elapsed = time.monotonic() - started
        where = output or "stdout"
        report.write(
            f"Exported {_plural(written, 'row')} ({_plural(tenants, 'tenant')}, "
            f"{_plural(features, 'feature')}) to {where} in {elapsed:.1f} s."
        )

    def _records(self, options: dict[str, Any]) -> QuerySet[UsageRecord]:
        records = UsageRecord.objects.all()
        tenant = options["tenant"]
        if tenant:
            match = Q(tenant__slug=tenant)
            pk = primary_key(tenant)
            if pk is not None:
                match |= Q(tenant_id=pk)
            records = records.filter(match)
            if not records.exists():
                raise CommandError(f"No usage for the tenant {tenant!r}.")
        if options["feature"]:
            records = records.filter(feature=options["feature"])
        if options["since"]:
            since = datetime.combine(options["since"], datetime.min.time(), tzinfo=UTC)
            records = records.filter(period_start__gte=since)
        if options["current"]:
            records = current_counters(records)
        return with_effective_limits(records).order_by("tenant_id", "feature", "period_start")

    def _write(
        self,
        stream: IO[str] | Any,
        records: QuerySet[UsageRecord],
        total: int,
        options: dict[str, Any],
    ) -> tuple[int, int, int]:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(HEADER)
        every: int = options["progress_every"]
        written = 0
        tenants: set[int] = set()
        features: set[str] = set()
        for row in self._rows(records):
            writer.writerow((*row[:-2], _limit(row[-2], row[-1])))
            written += 1
            tenants.add(row[0])
            features.add(row[4])
            if every and written % every == 0:
                # rows written since the count may outnumber it; never report over 100 %
                share = written * 100 // max(total, written)
                self.stderr.write(f"  {written} of {max(total, written)} rows ({share}%)")
        return written, len(tenants), len(features)

    def _rows(self, records: QuerySet[UsageRecord]) -> Iterator[tuple[Any, ...]]:
        # iterator(): rows stream from a cursor instead of being cached, whatever the table size.
        for row in records.values_list(*FIELDS).iterator(chunk_size=2000):
            start, end = row[6], row[7]
            yield (*row[:6], _timestamp(start), _timestamp(end), *row[8:])
