from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from usage_limits.models import Tenant
from usage_limits.resets import reset_expired


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


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
            ids = {closed.tenant_id for closed in report.closed}
            slugs = dict(Tenant.objects.filter(pk__in=ids).values_list("pk", "slug"))
            for closed in report.closed:
                self.stdout.write(
                    f"  {verb} {slugs.get(closed.tenant_id, closed.tenant_id)} {closed.feature} "
                    f"{closed.period.key} at {closed.value_before}"
                )
        summary = (
            f"{_plural(report.checked, 'scheduled tenant')} checked, {report.moved} moved to a "
            f"new period ({_plural(len(report.closed), 'counter')} {verb}), {report.pinned} "
            f"pinned for the first time, {report.skipped} skipped (changed by a concurrent run)."
        )
        prefix = "Dry run: " if report.dry_run else ""
        self.stdout.write(self.style.SUCCESS(prefix + summary))
