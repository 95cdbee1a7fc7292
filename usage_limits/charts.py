"""The usage history chart's geometry, computed in Python so the template only prints an SVG.

What it draws, and why: one bar per day whose height is the *running total within the day's
period* (for metered features), with the period's limit as a horizontal line. A bar that reaches
the line is a day the tenant was blocked, and the bars drop back where a new period starts. Daily
amounts ("12 calls on the 12th") are in each bar's tooltip and in the table fallback; drawn on
their own against a monthly limit they would all look tiny and say nothing about the limit.
Allocations (seats, projects) are levels, not sums of days, so their chart shows what was added
each day and no limit line.

The SVG stretches to its container (``preserveAspectRatio="none"``) and carries no text: axis
labels are HTML around it, so they stay legible on a 360 px phone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from usage_limits.history import DayUsage, UsageHistory
from usage_limits.levels import Level
from usage_limits.meters import display_quantity
from usage_limits.units import exact_quantity, humanize_quantity

VIEW_WIDTH = 600
VIEW_HEIGHT = 200
# Share of a day's slot left empty between bars (none when bars would get thinner than this).
_GAP = 0.25
_HEADROOM = 1.1

PERIOD_PHRASES = {
    "daily": gettext_lazy("per day"),
    "weekly": gettext_lazy("per week"),
    "monthly": gettext_lazy("per month"),
    "yearly": gettext_lazy("per year"),
    "billing_monthly": gettext_lazy("per billing month"),
}


def _svg_number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def nice_ceiling(value: float) -> int:
    """The smallest round number at or above ``value`` (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 x 10^n),
    an axis top people can read that leaves little empty space above the tallest bar."""
    if value <= 1:
        return 1
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * power:
            return math.ceil(step * power)
    return math.ceil(10 * power)  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class ChartBar:
    x: str
    y: str
    width: str
    height: str
    level: Level
    title: str


@dataclass(frozen=True, slots=True)
class ChartRow:
    """One line of the table fallback."""

    day: date
    day_label: str
    used: str
    period_used: str


@dataclass(frozen=True, slots=True)
class HistoryChart:
    dom_id: str
    history: UsageHistory
    days: int
    bars: list[ChartBar]
    rows: list[ChartRow]
    limit_y: str | None  # where the limit line is drawn; None when there is no line
    limit_label: str  # "100 per month", or "" without a line
    scale_top: str  # the value at the top of the plot, for the HTML axis
    title: str
    description: str
    first_label: str
    last_label: str
    view_width: int = VIEW_WIDTH
    view_height: int = VIEW_HEIGHT

    @property
    def cumulative(self) -> bool:
        return self.history.cumulative


def _short(day: date) -> str:
    return date_format(day, "M j")


def _bar_title(history: UsageHistory, day: DayUsage) -> str:
    unit = history.unit
    label = date_format(day.day, "D j M")
    if not history.cumulative:
        return _("%(day)s: %(used)s added") % {
            "day": label,
            "used": exact_quantity(day.used, unit),
        }
    if history.limit is None:
        so_far = exact_quantity(day.period_used, unit)
    else:
        so_far = _("%(used)s of %(limit)s") % {
            "used": exact_quantity(day.period_used, unit),
            "limit": exact_quantity(history.limit, unit),
        }
    return _("%(day)s: %(so_far)s used this period (%(today)s that day)") % {
        "day": label,
        "so_far": so_far,
        "today": exact_quantity(day.used, unit),
    }


def _description(history: UsageHistory, days: int, limit_label: str) -> str:
    what = (
        _("Running total of %(feature)s within each period, day by day")
        if history.cumulative
        else _("%(feature)s added each day")
    ) % {"feature": history.label}
    parts = [
        _("%(what)s, over the last %(days)s, from %(first)s to %(last)s.")
        % {
            "what": what,
            "days": ngettext("%(n)d day", "%(n)d days", days) % {"n": days},
            "first": date_format(history.first, "j F Y"),
            "last": date_format(history.last, "j F Y"),
        }
    ]
    if limit_label:
        parts.append(_("The line marks the limit: %(limit)s.") % {"limit": limit_label})
    elif history.cumulative:
        parts.append(_("No limit: the plan includes unlimited use."))
    peak = history.peak
    if peak is None:
        parts.append(_("Nothing was used in this range."))
    else:
        parts.append(
            _("Highest: %(value)s on %(day)s.")
            % {
                "value": exact_quantity(peak.period_used, history.unit),
                "day": date_format(peak.day, "j F"),
            }
        )
    return " ".join(str(p) for p in parts)


def history_chart(history: UsageHistory, *, dom_id: str = "") -> HistoryChart:
    """The chart of ``history`` (see the module's docstring for what is drawn)."""
    days = len(history.days)
    limit = history.limit if history.cumulative else None
    highest = max((d.period_used for d in history.days), default=0)
    top = nice_ceiling(max(highest, limit or 0) * _HEADROOM)

    def y_of(value: int) -> float:
        return VIEW_HEIGHT - min(value, top) / top * VIEW_HEIGHT

    slot = VIEW_WIDTH / max(days, 1)
    gap = slot * _GAP if slot >= 4 else 0.0
    bars = []
    for index, day in enumerate(history.days):
        if day.period_used <= 0:
            continue
        y = y_of(day.period_used)
        bars.append(
            ChartBar(
                x=_svg_number(index * slot + gap / 2),
                y=_svg_number(y),
                width=_svg_number(slot - gap),
                height=_svg_number(VIEW_HEIGHT - y),
                level=day.level,
                title=_bar_title(history, day),
            )
        )
    limit_label = ""
    limit_y = None
    if limit is not None:
        limit_y = _svg_number(min(y_of(limit), VIEW_HEIGHT - 1))  # a zero limit stays visible
        per = PERIOD_PHRASES.get(history.period or "", "")
        limit_label = f"{display_quantity(limit, history.unit)} {per}".strip()
    rows = [
        ChartRow(
            day=d.day,
            # the year is in the <time> element's datetime; a phone's column stays narrow
            day_label=date_format(d.day, "D j M"),
            used=exact_quantity(d.used, history.unit),
            period_used=exact_quantity(d.period_used, history.unit),
        )
        for d in reversed(history.days)
    ]
    title = _("%(feature)s, last %(days)s") % {
        "feature": history.label,
        "days": ngettext("%(n)d day", "%(n)d days", days) % {"n": days},
    }
    return HistoryChart(
        dom_id=dom_id or f"usage-history-{history.tenant_id}-{history.feature}",
        history=history,
        days=days,
        bars=bars,
        rows=rows,
        limit_y=limit_y,
        limit_label=limit_label,
        scale_top=humanize_quantity(top, history.unit),
        title=str(title),
        description=_description(history, days, limit_label),
        first_label=_short(history.first),
        last_label=_short(history.last),
    )
