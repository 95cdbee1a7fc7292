from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage_limits.history import prune_history


class Command(BaseCommand):
    help = (
        "Delete daily usage history (the dashboard chart's buckets) older than --keep-days "
        "days. Counters and closed periods are not touched. Safe to run from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-days",
            type=int,
            default=400,
            help="Days of history to keep, today included (default 400: a year and some).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=5_000, help="Rows deleted per transaction."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["keep_days"] < 1 or options["batch_size"] < 1:
            raise CommandError("--keep-days and --batch-size must be at least 1.")
        deleted = prune_history(options["keep_days"], batch_size=options["batch_size"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {deleted} daily usage rows older than {options['keep_days']} days."
            )
        )
