"""Meter view-models: what a usage meter shows, decided in Python so templates only print.

The level (ok / amber / red) comes from :mod:`usage_limits.levels`, the same edges the API and
the admin use; a template never compares numbers. Every level other than ok also carries a word,
so colour is never the only signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from usage_limits.levels import Level
from usage_limits.models import FeatureKind
from usage_limits.results import FeatureUsage
from usage_limits.units import BYTES, exact_quantity, feature_unit, humanize_quantity

# Below this, a meter shows the exact figure ("700 / 1,000"): shortening it would only lose detail.
EXACT_BELOW = 10_000


def display_quantity(value: int | None, unit: str = "") -> str:
    """A meter's figure: exact when small, 12.3K / 4.5M when large, sizes for byte features."""
    if value is not None and unit != BYTES and abs(value) < EXACT_BELOW:
        return exact_quantity(value)
    return humanize_quantity(value, unit)


@dataclass(frozen=True, slots=True)
class Meter:
    """One feature's meter, ready to print."""

    dom_id: str
    feature: str
    label: str
    kind: str
    unit: str
    used: int
    limit: int | None
    level: Level
    percent: float  # may exceed 100 on overage; 0 when unlimited
    used_display: str  # "1.2K"
    limit_display: str  # "10K", or "Unlimited"
    status: str  # the word that goes with amber and red ("" when ok)
    value_text: str  # aria-valuetext: the whole meter in one sentence
    resets_at: datetime | None
    resets_in: str  # "9 days" ("" when the feature never resets)

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    @property
    def percent_shown(self) -> int:
        """Whole percent for the bar and ``aria-valuenow``: rounded down, within 0..100.

        Rounded down so the number agrees with the level: 59.9 % reads 59 % and is ok.
        """
        return max(0, min(100, math.floor(self.percent)))

    @property
    def percent_text(self) -> str:
        if self.unlimited:
            return ""
        if 0 < self.percent < 1:
            return "<1%"
        return f"{math.floor(self.percent)}%"

    @property
    def bar_width(self) -> str:
        """The filled share of the bar for the SVG ``width`` attribute (0..100, one decimal)."""
        return f"{max(0.0, min(100.0, self.percent)):.1f}".removesuffix(".0")

    @property
    def is_warning(self) -> bool:
        return self.level is not Level.OK

    @property
    def resets(self) -> bool:
        return self.resets_at is not None


def time_until(moment: datetime, now: datetime) -> str:
    """ "9 days", "5 hours", "12 minutes": the largest whole unit, rounded up.

    Rounded up so "resets in 1 day" is never said of a reset 30 hours away (it says 2 days), and
    a reset due in 20 seconds reads "1 minute" rather than "0 minutes".
    """
    seconds = max(0, math.ceil((moment - now).total_seconds()))
    if seconds > 86_400:
        days = math.ceil(seconds / 86_400)
        return ngettext("%(n)d day", "%(n)d days", days) % {"n": days}
    if seconds > 3_600:
        hours = math.ceil(seconds / 3_600)
        return ngettext("%(n)d hour", "%(n)d hours", hours) % {"n": hours}
    minutes = max(1, math.ceil(seconds / 60))
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


def level_status(level: Level, used: int, limit: int | None) -> str:
    """The word shown next to an amber or red meter."""
    if level is Level.AMBER:
        return _("Nearing limit")
    if level is Level.RED:
        if limit is not None and used > limit:
            return _("Over limit")
        if limit is not None and used >= limit:
            return _("Limit reached")
        return _("Almost used up")
    return ""


def build_meter(
    usage: FeatureUsage, *, tenant_id: int | None = None, now: datetime | None = None
) -> Meter:
    """The meter of one feature of :func:`usage_limits.get_usage`'s answer."""
    unit = feature_unit(usage.feature)
    level = usage.level
    status = level_status(level, usage.used, usage.limit)
    used_exact = exact_quantity(usage.used, unit)
    if usage.limit is None:
        value_text = _("%(used)s used, unlimited") % {"used": used_exact}
    else:
        value_text = _("%(used)s of %(limit)s used (%(percent)d%%)") % {
            "used": used_exact,
            "limit": exact_quantity(usage.limit, unit),
            "percent": math.floor(usage.percent),
        }
    if status:
        value_text = f"{value_text}. {status}."
    resets_at = usage.resets_at if usage.kind == FeatureKind.METERED else None
    resets_in = ""
    if resets_at is not None:
        resets_in = time_until(resets_at, now or timezone.now())
    prefix = "usage-meter" if tenant_id is None else f"usage-meter-{tenant_id}"
    return Meter(
        dom_id=f"{prefix}-{usage.feature}",
        feature=usage.feature,
        label=usage.label,
        kind=usage.kind,
        unit=unit,
        used=usage.used,
        limit=usage.limit,
        level=level,
        percent=usage.percent,
        used_display=display_quantity(usage.used, unit),
        limit_display=display_quantity(usage.limit, unit),
        status=status,
        value_text=value_text,
        resets_at=resets_at,
        resets_in=resets_in,
    )
