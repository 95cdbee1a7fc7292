"""System checks that reject a malformed ``USAGE_LIMITS`` setting at start-up.

Each message has an id (``usage_limits.E001``...) and a hint saying what to write instead.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from usage_limits.backends.redis_checks import check_redis_settings
from usage_limits.conf import DEFAULTS
from usage_limits.models import UNLIMITED, FeatureKind, ResetMode
from usage_limits.periods import PERIOD_NAMES
from usage_limits.plans import declared_kind, plan_limits_mapping

KINDS = tuple(FeatureKind.values)
RESET_MODES = tuple(ResetMode.values)
SHAPE_HINT = 'e.g. USAGE_LIMITS = {"PLANS": {"FREE": {"api_calls": 100, "projects": 3}}}'


def _error(id_: int, msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id=f"usage_limits.E{id_:03d}")


@register(Tags.compatibility)
def check_settings(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, "USAGE_LIMITS", {})
    if not isinstance(raw, Mapping):
        return [_error(1, "USAGE_LIMITS must be a dict.", SHAPE_HINT)]
    errors: list[CheckMessage] = []
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        errors.append(
            Warning(
                f"USAGE_LIMITS has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="usage_limits.W001",
            )
        )
    errors += _check_features(raw.get("FEATURES", {}))
    errors += _check_plans(raw.get("PLANS", {}), raw.get("FEATURES", {}))
    errors += _check_periods_and_modes(raw)
    errors += _check_thresholds(raw)
    errors += _check_paths(raw)
    errors += _check_aliases(raw)
    errors += check_redis_settings(raw)
    return errors


def _check_features(features: Any) -> list[CheckMessage]:
    if not isinstance(features, Mapping):
        return [
            _error(
                2,
                "USAGE_LIMITS['FEATURES'] must be a dict.",
                'e.g. {"api_calls": {"kind": "metered"}}',
            )
        ]
    errors: list[CheckMessage] = []
    for name, spec in features.items():
        if not isinstance(name, str) or not name.isidentifier():
            errors.append(
                _error(
                    2,
                    f"Feature name {name!r} is not a valid identifier.",
                    "Use snake_case names such as 'api_calls'.",
                )
            )
            continue
        if not isinstance(spec, Mapping):
            errors.append(
                _error(
                    2,
                    f"USAGE_LIMITS['FEATURES'][{name!r}] must be a dict.",
                    'e.g. {"kind": "metered", "period": "monthly"}',
                )
            )
            continue
        kind = spec.get("kind", FeatureKind.METERED)
        if kind not in KINDS:
            errors.append(
                _error(
                    3,
                    f"Feature {name!r} has unknown kind {kind!r}.",
                    f"Use one of: {', '.join(KINDS)}.",
                )
            )
        period = spec.get("period")
        if period is not None:
            if kind != FeatureKind.METERED:
                errors.append(
                    _error(
                        4,
                        f"Feature {name!r} is {kind} but names a period.",
                        "Only metered features reset; remove 'period'.",
                    )
                )
            elif period not in PERIOD_NAMES:
                errors.append(
                    _error(
                        4,
                        f"Feature {name!r} has unknown period {period!r}.",
                        f"Use one of: {', '.join(PERIOD_NAMES)}.",
                    )
                )
    return errors


def _check_plans(plans: Any, features: Any) -> list[CheckMessage]:
    if not isinstance(plans, Mapping):
        return [
            _error(5, "USAGE_LIMITS['PLANS'] must be a dict of plan code to limits.", SHAPE_HINT)
        ]
    declared = features if isinstance(features, Mapping) else {}
    errors: list[CheckMessage] = []
    for code, value in plans.items():
        if not isinstance(code, str) or not code or len(code) > 64:
            errors.append(
                _error(
                    5,
                    f"Plan code {code!r} must be a non-empty string of at most 64 characters.",
                    SHAPE_HINT,
                )
            )
            continue
        if not isinstance(value, Mapping):
            errors.append(_error(5, f"Plan {code!r} must map features to limits.", SHAPE_HINT))
            continue
        for feature, limit in plan_limits_mapping(value).items():
            where = f"USAGE_LIMITS['PLANS'][{code!r}][{feature!r}]"
            if declared and feature not in declared:
                errors.append(
                    _error(
                        6,
                        f"{where}: feature {feature!r} is not in USAGE_LIMITS['FEATURES'].",
                        f"Declare it, or use one of: {', '.join(declared)}.",
                    )
                )
                continue
            kind = (
                declared.get(feature, {}).get("kind")
                if isinstance(declared.get(feature), Mapping)
                else None
            )
            kind = kind or declared_kind(feature, limit)
            if kind == FeatureKind.BOOLEAN:
                if not isinstance(limit, bool) and limit not in (0, 1):
                    errors.append(
                        _error(
                            7,
                            f"{where} = {limit!r}: a boolean feature takes True or False.",
                            "Write True (included) or False (not included).",
                        )
                    )
                continue
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int):
                errors.append(
                    _error(
                        7,
                        f"{where} = {limit!r} is not a whole number.",
                        "Limits are integers; -1 means unlimited.",
                    )
                )
            elif limit < UNLIMITED:
                errors.append(
                    _error(
                        7, f"{where} = {limit} is negative.", "Use -1 for unlimited, or 0 and up."
                    )
                )
    return errors


def _check_periods_and_modes(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    period = raw.get("DEFAULT_PERIOD", DEFAULTS["DEFAULT_PERIOD"])
    if period not in PERIOD_NAMES:
        errors.append(
            _error(
                4,
                f"USAGE_LIMITS['DEFAULT_PERIOD'] = {period!r} is not a period.",
                f"Use one of: {', '.join(PERIOD_NAMES)}.",
            )
        )
    mode = raw.get("RESET_MODE", DEFAULTS["RESET_MODE"])
    if mode not in RESET_MODES:
        errors.append(
            _error(
                8,
                f"USAGE_LIMITS['RESET_MODE'] = {mode!r} is not a reset mode.",
                f"Use one of: {', '.join(RESET_MODES)}.",
            )
        )
    zone = raw.get("TIME_ZONE", DEFAULTS["TIME_ZONE"])
    try:
        zoneinfo.ZoneInfo(str(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors.append(
            _error(
                9,
                f"USAGE_LIMITS['TIME_ZONE'] = {zone!r} is not a known time zone.",
                "Use an IANA name such as 'UTC' or 'Europe/Berlin'.",
            )
        )
    grace = raw.get("PAST_DUE_GRACE_DAYS", DEFAULTS["PAST_DUE_GRACE_DAYS"])
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
        errors.append(
            _error(
                10,
                f"USAGE_LIMITS['PAST_DUE_GRACE_DAYS'] = {grace!r} must be a whole number of "
                "days, 0 or more.",
                "e.g. 7",
            )
        )
    return errors


def _check_thresholds(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    meter = raw.get("METER_THRESHOLDS", DEFAULTS["METER_THRESHOLDS"])
    hint = 'e.g. {"amber": 60, "red": 85}: 0 < amber < red <= 100'
    if not isinstance(meter, Mapping) or set(meter) - {"amber", "red"}:
        errors.append(
            _error(
                11, "USAGE_LIMITS['METER_THRESHOLDS'] must be a dict with 'amber' and 'red'.", hint
            )
        )
    else:
        amber, red = meter.get("amber", 60), meter.get("red", 85)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (amber, red))
        if not numbers or not 0 < amber < red <= 100:
            errors.append(
                _error(11, f"Meter thresholds out of order: amber={amber!r}, red={red!r}.", hint)
            )
    warnings = raw.get("WARNING_THRESHOLDS", DEFAULTS["WARNING_THRESHOLDS"])
    valid = isinstance(warnings, list | tuple) and all(
        isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in warnings
    )
    if not valid or len(set(warnings)) != len(warnings):
        errors.append(
            _error(
                12,
                f"USAGE_LIMITS['WARNING_THRESHOLDS'] = {warnings!r} must be distinct whole "
                "percentages.",
                "e.g. [80, 100]",
            )
        )
    return errors


def _check_paths(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in ("TENANT_RESOLVER", "STORE"):
        path = raw.get(name, DEFAULTS[name])
        try:
            import_string(str(path))
        except ImportError as exc:
            errors.append(
                _error(
                    13,
                    f"USAGE_LIMITS[{name!r}] = {path!r} does not import: {exc}",
                    "Give a dotted path to an importable callable or class.",
                )
            )
    return errors


def _check_aliases(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    alias = raw.get("DATABASE_ALIAS", DEFAULTS["DATABASE_ALIAS"])
    if alias not in settings.DATABASES:
        errors.append(
            _error(
                14,
                f"USAGE_LIMITS['DATABASE_ALIAS'] = {alias!r} is not in DATABASES.",
                f"Use one of: {', '.join(settings.DATABASES)}.",
            )
        )
    else:
        db = settings.DATABASES[alias]
        options = db.get("OPTIONS", {})
        if (
            db.get("ENGINE", "").endswith("sqlite3")
            and options.get("transaction_mode") != "IMMEDIATE"
        ):
            errors.append(
                Warning(
                    "SQLite without IMMEDIATE transactions: concurrent resets and refunds can fail "
                    "with 'database is locked'.",
                    hint=f'Set DATABASES[{alias!r}]["OPTIONS"]["transaction_mode"] = "IMMEDIATE" '
                    "(and WAL, see docs/configuration.md).",
                    id="usage_limits.W002",
                )
            )
    cache_alias = raw.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
    caches = getattr(settings, "CACHES", {"default": {}})
    if cache_alias not in caches:
        errors.append(
            _error(
                15,
                f"USAGE_LIMITS['CACHE_ALIAS'] = {cache_alias!r} is not in CACHES.",
                f"Use one of: {', '.join(caches)}.",
            )
        )
    return errors
