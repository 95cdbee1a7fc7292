"""The usage dashboard's view-model: a tenant's plan, its meters, flags and what to do next.

Built from one :func:`usage_limits.get_usage` answer (one counter query whatever the number of
features), so the page and the ``{% usage_dashboard %}`` tag cost the same for 3 or 30 features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from usage_limits.conf import conf
from usage_limits.engine import TenantRef, get_usage
from usage_limits.history import RANGES
from usage_limits.levels import Level
from usage_limits.meters import Meter, build_meter, time_until
from usage_limits.models import FeatureKind, SubscriptionStatus
from usage_limits.results import TenantUsage


@dataclass(frozen=True, slots=True)
class FeatureFlag:
    """A boolean feature: included in the plan or not."""

    feature: str
    label: str
    included: bool

    @property
    def status(self) -> str:
        return _("Included") if self.included else _("Not included")


@dataclass(frozen=True, slots=True)
class RangeLink:
    days: int
    label: str
    url: str
    current: bool


@dataclass(frozen=True, slots=True)
class Dashboard:
    usage: TenantUsage
    metered: list[Meter] = field(default_factory=list)
    allocations: list[Meter] = field(default_factory=list)
    flags: list[FeatureFlag] = field(default_factory=list)
    upgrade_url: str | None = None
    next_reset: datetime | None = None
    next_reset_in: str = ""

    @property
    def meters(self) -> list[Meter]:
        return [*self.metered, *self.allocations]

    @property
    def warnings(self) -> list[Meter]:
        """Meters at amber or red, the fullest first."""
        return sorted(
            (m for m in self.meters if m.is_warning), key=lambda m: m.percent, reverse=True
        )

    @property
    def needs_upgrade(self) -> bool:
        return bool(self.warnings)

    @property
    def level(self) -> Level:
        """The worst level on the page (what the call to action is coloured by)."""
        levels = {m.level for m in self.meters}
        for level in (Level.RED, Level.AMBER):
            if level in levels:
                return level
        return Level.OK

    @property
    def upgrade_message(self) -> str:
        warnings = self.warnings
        if not warnings:
            return ""
        worst = warnings[0]
        if len(warnings) == 1:
            return _("%(feature)s: %(percent)s of your plan's limit used.") % {
                "percent": worst.percent_text,
                "feature": worst.label,
            }
        return ngettext(
            "%(count)d feature is close to its limit.",
            "%(count)d features are close to their limits.",
            len(warnings),
        ) % {"count": len(warnings)}

    @property
    def subscription_label(self) -> str:
        try:
            return str(SubscriptionStatus(self.usage.subscription_status).label)
        except ValueError:
            return self.usage.subscription_status

    @property
    def subscription_active(self) -> bool:
        return self.usage.subscription_status in (
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.TRIALING,
        )


def build_dashboard(tenant: TenantRef | TenantUsage, *, now: datetime | None = None) -> Dashboard:
    usage = tenant if isinstance(tenant, TenantUsage) else get_usage(tenant)
    now = now or timezone.now()
    metered: list[Meter] = []
    allocations: list[Meter] = []
    flags: list[FeatureFlag] = []
    for feature in usage.features:
        if feature.kind == FeatureKind.BOOLEAN:
            flags.append(FeatureFlag(feature.feature, feature.label, feature.included))
            continue
        meter = build_meter(feature, tenant_id=usage.tenant_id, now=now)
        (metered if feature.kind == FeatureKind.METERED else allocations).append(meter)
    resets = [m.resets_at for m in metered if m.resets_at is not None]
    next_reset = min(resets, default=None)
    return Dashboard(
        usage=usage,
        metered=metered,
        allocations=allocations,
        flags=flags,
        upgrade_url=conf.UPGRADE_URL,
        next_reset=next_reset,
        next_reset_in="" if next_reset is None else time_until(next_reset, now),
    )


def range_links(query: QueryDict | None, current: int, param: str = "days") -> list[RangeLink]:
    """Links to the same page with another history range, keeping the rest of the query."""
    links = []
    for days in RANGES:
        params = query.copy() if query is not None else QueryDict(mutable=True)
        params[param] = str(days)
        links.append(
            RangeLink(
                days=days,
                label=ngettext("%(n)d day", "%(n)d days", days) % {"n": days},
                url=f"?{params.urlencode()}",
                current=days == current,
            )
        )
    return links


@dataclass(frozen=True, slots=True)
class FeatureLink:
    feature: str
    label: str
    url: str
    current: bool


def feature_links(
    query: QueryDict | None, meters: list[Meter], current: str, param: str = "feature"
) -> list[FeatureLink]:
    """Links to the same page showing another feature's history, keeping the rest of the query."""
    links = []
    for meter in meters:
        params = query.copy() if query is not None else QueryDict(mutable=True)
        params[param] = meter.feature
        links.append(
            FeatureLink(
                meter.feature, meter.label, f"?{params.urlencode()}", meter.feature == current
            )
        )
    return links
