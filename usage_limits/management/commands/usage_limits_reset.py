from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser

from usage_limits.engine import get_usage, reset_usage
from usage_limits.exceptions import FeatureNotInPlan, UsageLimitsError, WrongFeatureKind
from usage_limits.models import FeatureKind, Tenant, UsageReset
from usage_limits.numbers import primary_key
from usage_limits.rules import known_features


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Command(BaseCommand):
    help = (
        "Reset the current usage of one tenant, several, or all of them to zero, through the "
        "engine: every reset writes an audit row and sends usage_reset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument(
            "--tenant",
            action="append",
            metavar="SLUG_OR_ID",
            help="A tenant's slug or id (repeat the option for several).",
        )
        who.add_argument("--all", action="store_true", help="Every tenant.")
        parser.add_argument(
            "--feature",
            help="Reset only this feature (default: every metered feature of the plan).",
        )
        parser.add_argument(
            "--reason", required=True, help="Why: kept in the audit trail (UsageReset.reason)."
        )
        parser.add_argument(
            "--user", metavar="USERNAME", help="Record the reset as done by this user."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be reset; change nothing."
        )
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="With --all, do not ask for confirmation (cron, scripts).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        reason = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must say why the usage is reset.")
        feature: str | None = options["feature"]
        if feature is not None and feature not in known_features():
            raise CommandError(f"Unknown feature {feature!r}.")
        user = self._user(options["user"])
        tenants = self._all() if options["all"] else self._named(options["tenant"])
        dry_run: bool = options["dry_run"]
        if options["all"] and not dry_run and options.get("interactive", True):
            what = f"the {feature} usage" if feature else "the current usage"
            answer = input(
                f"This resets {what} of all {Tenant.objects.count()} tenants to zero.\n"
                "Type 'yes' to continue, or 'no' to cancel: "
            )
            if answer.strip().lower() != "yes":
                raise CommandError("Reset cancelled.")
        verb = "would reset" if dry_run else "reset"
        done = skipped = tenant_count = 0
        for tenant in tenants:
            tenant_count += 1
            try:
                if dry_run:
                    lines = list(self._preview(tenant, feature))
                else:
                    results = reset_usage(
                        tenant,
                        feature,
                        by=user,
                        reason=reason,
                        source=UsageReset.Source.COMMAND,
                    )
                    lines = [f"{r.feature} {r.period.key}: {r.value_before} -> 0" for r in results]
            except UsageLimitsError as exc:
                skipped += 1
                self.stderr.write(f"  skipped {tenant.slug}: {exc}")
                continue
            for line in lines:
                self.stdout.write(f"  {verb} {tenant.slug} {line}")
            done += len(lines)
        prefix = "Dry run: " if dry_run else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"{prefix}{_plural(done, 'counter')} {verb} across "
                f"{_plural(tenant_count, 'tenant')}" + (f", {skipped} skipped." if skipped else ".")
            )
        )

    def _preview(self, tenant: Tenant, feature: str | None) -> Iterator[str]:
        # The same refusals as reset_usage(), so a dry run skips what a real run would skip.
        usage = get_usage(tenant)
        if feature is not None:
            try:
                kind = usage.feature(feature).kind
            except KeyError:
                raise FeatureNotInPlan(
                    f"Plan {usage.plan!r} does not include the feature {feature!r}."
                ) from None
            if kind == FeatureKind.BOOLEAN:
                raise WrongFeatureKind(f"{feature!r} is a boolean feature: it has no counter.")
        for item in usage.features:
            chosen = (
                item.kind == FeatureKind.METERED if feature is None else item.feature == feature
            )
            if chosen:
                period = item.period.key if item.period is not None else "open-ended"
                yield f"{item.feature} {period}: {item.used} -> 0"

    def _named(self, refs: Iterable[str]) -> list[Tenant]:
        tenants = []
        for ref in refs:
            tenant = Tenant.objects.filter(slug=ref).first()
            pk = primary_key(ref)
            if tenant is None and pk is not None:
                tenant = Tenant.objects.filter(pk=pk).first()
            if tenant is None:
                raise CommandError(f"No tenant with the slug or id {ref!r}.")
            tenants.append(tenant)
        return tenants

    def _all(self) -> Iterator[Tenant]:
        return Tenant.objects.order_by("pk").iterator(chunk_size=500)

    def _user(self, username: str | None) -> AbstractBaseUser | None:
        if username is None:
            return None
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None
