from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from usage_limits.resets import reset_expired


class Command(BaseCommand):
    help = (
        "Scheduled reset mode: move tenants whose counted period has ended on to their current "
        "period, writing an audit row per closed counter. Idempotent; run it from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be reset; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = reset_expired(dry_run=options["dry_run"])
        verb = "would close" if report.dry_run else "closed"
        if options["verbosity"] >= 2 or report.dry_run:
            for closed in report.closed:
                self.stdout.write(
                    f"  {verb} tenant {closed.tenant_id} {closed.feature} {closed.period.key} "
                    f"at {closed.value_before}"
                )
        summary = (
            f"{report.checked} scheduled tenants checked, {report.moved} moved to a new period "
            f"({len(report.closed)} counters {verb}), {report.pinned} pinned for the first time, "
            f"{report.skipped} skipped (changed by a concurrent run)."
        )
        prefix = "Dry run: " if report.dry_run else ""
        self.stdout.write(self.style.SUCCESS(prefix + summary))
