"""Demo data for trying the app: plans, a superuser and three tenants at different usage levels.

Idempotent: run it again and it changes nothing it made before (existing users keep their
passwords; counters are set, not added to). ``--reset`` deletes the demo tenants and their users
first, so it starts again from scratch. Counters are written through the engine, like any caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from usage_limits.conf import conf
from usage_limits.engine import get_usage, set_usage
from usage_limits.models import FeatureKind, Plan, SubscriptionStatus, Tenant, TenantMembership
from usage_limits.plans import sync_plans
from usage_limits.results import FeatureUsage
from usage_limits.testing.history import demo_history

SUPERUSER = "admin"


@dataclass(frozen=True)
class DemoTenant:
    slug: str
    name: str
    plan: str
    username: str  # password = username
    percent: int  # how full every limited meter of the tenant is


DEMO_TENANTS = (
    DemoTenant("acme", "Acme (Free)", "FREE", "free", 30),
    DemoTenant("globex", "Globex (Starter)", "STARTER", "starter", 70),
    DemoTenant("initech", "Initech (Pro)", "PRO", "pro", 95),
)

# What an unlimited feature shows, so that its row is not an empty zero.
UNLIMITED_METERED_USAGE = 12_345
UNLIMITED_ALLOCATION_USAGE = 42


def is_bytes(feature: str) -> bool:
    return conf.FEATURES.get(feature, {}).get("unit") == "bytes"


def demo_value(feature: str, kind: str, limit: int | None, percent: int) -> int:
    """The counter value that puts a meter at ``percent`` of ``limit`` (rounded half up)."""
    if limit is None:
        if kind == FeatureKind.METERED:
            return UNLIMITED_METERED_USAGE
        return UNLIMITED_ALLOCATION_USAGE * (1024**3 if is_bytes(feature) else 1)
    value = (limit * percent + 50) // 100
    if kind == FeatureKind.ALLOCATION and limit > 0 and percent > 0:
        # A tenant with members uses at least one seat: 1 of 1 is full, and shows so.
        return max(value, 1)
    return value


def describe(usage: FeatureUsage) -> str:
    if usage.kind == FeatureKind.BOOLEAN:
        return "included" if usage.included else "not included"

    def show(value: int) -> str:
        return str(filesizeformat(value)) if is_bytes(usage.feature) else f"{value:,}"

    if usage.limit is None:
        return f"{show(usage.used)} (unlimited)"
    return f"{show(usage.used)} / {show(usage.limit)} ({usage.percent:.0f} %, {usage.level})"


class Command(BaseCommand):
    help = (
        "Create demo data: the declared plans, a superuser admin/admin and three tenants "
        "(Free, Starter, Pro) with users free/free, starter/starter, pro/pro, at about 30, 70 "
        "and 95 % of their limits, with 90 days of daily history for the metered features. "
        "Idempotent. Never run it against a real database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Delete the demo tenants (with their usage) and their users first.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["reset"]:
            self._reset()
        report = sync_plans()
        self.stdout.write(
            f"Plans and limits: {len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged."
        )
        plans = {plan.code: plan for plan in Plan.objects.all()}
        missing = sorted({demo.plan for demo in DEMO_TENANTS} - set(plans))
        if missing:
            raise CommandError(
                f"USAGE_LIMITS['PLANS'] has no plan {', '.join(missing)}: the demo needs FREE, "
                "STARTER and PRO (see example_project/settings.py)."
            )
        self._superuser()
        for demo in DEMO_TENANTS:
            self._tenant(demo, plans[demo.plan])
        self.stdout.write(self.style.SUCCESS("Demo data ready."))

    def _reset(self) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            rows, by_model = Tenant.objects.filter(slug__in=[d.slug for d in DEMO_TENANTS]).delete()
            _, users = user_model._default_manager.filter(
                **{f"{user_model.USERNAME_FIELD}__in": [d.username for d in DEMO_TENANTS]}
            ).delete()
        self.stdout.write(
            f"Reset: deleted {by_model.get(Tenant._meta.label, 0)} demo tenants ({rows} rows with "
            f"their usage) and {users.get(user_model._meta.label, 0)} demo users."
        )

    def _user(self, username: str, *, superuser: bool = False) -> tuple[AbstractBaseUser, bool]:
        user_model = get_user_model()
        manager: Any = user_model._default_manager
        existing = manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if existing is not None:
            return existing, False
        create = manager.create_superuser if superuser else manager.create_user
        # The password is the username: demo accounts, printed on the screen.
        user: AbstractBaseUser = create(**{user_model.USERNAME_FIELD: username}, password=username)
        return user, True

    def _credentials(self, username: str, created: bool) -> str:
        if created:
            return f"{username} / {username}"
        return f"{username} (already there, password left as it was)"

    def _superuser(self) -> None:
        _user, created = self._user(SUPERUSER, superuser=True)
        self.stdout.write(f"Superuser: {self._credentials(SUPERUSER, created)}")
        self.stdout.write(
            self.style.WARNING(
                "WARNING: these are demo credentials, known to anyone who reads this. "
                "Never run usage_limits_demo on a site that others can reach."
            )
        )

    def _tenant(self, demo: DemoTenant, plan: Plan) -> None:
        tenant, created = Tenant.objects.update_or_create(
            slug=demo.slug,
            defaults={
                "name": demo.name,
                "plan": plan,
                "subscription_status": SubscriptionStatus.ACTIVE,
            },
        )
        user, user_created = self._user(demo.username)
        TenantMembership.objects.update_or_create(
            tenant=tenant,
            user_id=user.pk,
            defaults={"role": TenantMembership.Role.OWNER, "is_default": True},
        )
        for feature in get_usage(tenant).features:
            if feature.kind != FeatureKind.BOOLEAN:
                value = demo_value(feature.feature, feature.kind, feature.limit, demo.percent)
                set_usage(tenant, feature.feature, value)
                if feature.kind == FeatureKind.METERED and feature.period is not None:
                    # The history chart's days: this period's usage spread over its days so
                    # far, and earlier periods before it.
                    start = timezone.localdate(feature.period.start, ZoneInfo(conf.TIME_ZONE))
                    demo_history(tenant, feature.feature, value, start, limit=feature.limit)
        self.stdout.write(
            f"\n{tenant.name} ({'created' if created else 'exists'}), plan {plan.code}, "
            f"user {self._credentials(demo.username, user_created)}"
        )
        for feature in get_usage(tenant).features:
            self.stdout.write(f"  {feature.label:<20} {describe(feature)}")
