from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from usage_limits.backends.redis_client import UNAVAILABLE
from usage_limits.backends.redis_flush import DEFAULT_BATCH_SIZE, flush_counters
from usage_limits.exceptions import StoreUnavailable


class Command(BaseCommand):
    help = (
        "Copy the Redis store's counters into UsageRecord rows (write-behind). Safe to run "
        "again after a crash and in several processes at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Counters per database transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="Keep running, flushing every SECONDS (a sidecar instead of a cron entry).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more.")
        every: float | None = options["every"]
        unavailable: tuple[type[Exception], ...] = (StoreUnavailable, *UNAVAILABLE)
        while True:
            started = time.monotonic()
            try:
                report = flush_counters(batch_size=batch_size)
            except unavailable as exc:
                if every is None:
                    raise CommandError(f"Redis is unavailable, nothing flushed: {exc}") from exc
                self.stderr.write(f"Redis is unavailable, will try again: {exc}")
            except DatabaseError as exc:
                if every is None:
                    raise
                # A sidecar outlives a database restart: drop the broken connection, go on.
                self.stderr.write(f"The database refused the flush, will try again: {exc}")
                close_old_connections()
            else:
                elapsed = time.monotonic() - started
                self.stdout.write(f"Flushed in {elapsed:.2f} s: {report}.")
            if every is None:
                return
            try:
                time.sleep(max(every - (time.monotonic() - started), 0.0))
            except KeyboardInterrupt:  # stopping a sidecar between two flushes is a clean exit
                return
