from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from usage_limits.plans import sync_plans


class Command(BaseCommand):
    help = "Create or update the plans and limits declared in USAGE_LIMITS['PLANS']. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Also delete limits that are in the database but no longer in settings.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_plans(prune=options["prune"])
        for label in report.created:
            self.stdout.write(f"  created {label}")
        for label in report.updated:
            self.stdout.write(f"  updated {label}")
        for label in report.removed:
            self.stdout.write(f"  removed {label}")
        summary = (
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.removed)} removed, {len(report.unchanged)} unchanged."
        )
        style = self.style.SUCCESS if report.changed else self.style.NOTICE
        self.stdout.write(style(f"Plans in sync: {summary}"))
