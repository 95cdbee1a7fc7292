from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage_limits.billing.reporter import BatchReport, report_pending


class Command(BaseCommand):
    help = (
        "Send pending usage events to Stripe as Billing Meter events. Safe to run from cron or "
        "several workers at once: each event is sent once, failures are retried with backoff."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="Send at most this many usage events in this run (default: all that are due).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if limit is not None and limit < 1:
            raise CommandError("--limit must be 1 or more.")
        verbose = options["verbosity"] >= 1

        def progress(batch: BatchReport) -> None:
            if verbose:
                self.stdout.write(
                    f"  batch {batch.number}: {batch.events} events in {batch.requests} "
                    f"meter events: {batch.sent} sent, {batch.retrying} to retry, "
                    f"{batch.failed} failed"
                )

        summary = report_pending(limit, progress=progress)
        if not summary.enabled:
            self.stdout.write(self.style.WARNING(str(summary)))
            return
        if summary.stopped:
            raise CommandError(str(summary))
        style = (
            self.style.SUCCESS if not (summary.failed or summary.retrying) else self.style.NOTICE
        )
        self.stdout.write(style(str(summary)))
