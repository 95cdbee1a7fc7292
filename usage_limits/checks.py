"""System checks that reject a malformed ``USAGE_LIMITS`` setting at start-up.

Each message has an id (``usage_limits.E001``...) and a hint saying what to write instead.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from usage_limits import RATELIMIT_HEADERS
from usage_limits.backends.base import UsageStore
from usage_limits.backends.redis_checks import check_redis_settings
from usage_limits.conf import DEFAULTS
from usage_limits.models import UNLIMITED, FeatureKind, ResetMode
from usage_limits.periods import PERIOD_NAMES
from usage_limits.plans import declared_kind, plan_limits_mapping
from usage_limits.units import UNITS

KINDS = tuple(FeatureKind.values)
RESET_MODES = tuple(ResetMode.values)
# The counters are 64-bit signed integers in every store.
MAX_LIMIT = 2**63 - 1
# Ten years: beyond that a grace period is no grace period, and dates stop being representable.
MAX_GRACE_DAYS = 3650
SHAPE_HINT = 'e.g. USAGE_LIMITS = {"PLANS": {"FREE": {"api_calls": 100, "projects": 3}}}'


def _error(id_: int, msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id=f"usage_limits.E{id_:03d}")


def _boolean(raw: Mapping[str, Any], name: str, id_: int, hint: str) -> list[CheckMessage]:
    """An error unless the setting ``name`` (or its default) is ``True`` or ``False``."""
    value = raw.get(name, DEFAULTS[name])
    if isinstance(value, bool):
        return []
    return [_error(id_, f"USAGE_LIMITS[{name!r}] = {value!r} must be True or False.", hint)]


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
    if isinstance(raw.get("FEATURES", {}), Mapping):
        # Plans are read against the declared features; a malformed FEATURES is reported above.
        errors += _check_plans(raw.get("PLANS", {}), raw.get("FEATURES", {}))
    errors += _check_periods_and_modes(raw)
    errors += _check_thresholds(raw)
    errors += _check_paths(raw)
    errors += _check_aliases(raw)
    errors += _check_reset_key(raw)
    errors += _check_dashboard(raw)
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
            elif limit > MAX_LIMIT:
                errors.append(
                    _error(
                        7,
                        f"{where} = {limit} does not fit a 64-bit counter.",
                        "Use -1 for unlimited.",
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
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE_DAYS:
        # The upper bound keeps "past_due_since + grace" a representable date.
        errors.append(
            _error(
                10,
                f"USAGE_LIMITS['PAST_DUE_GRACE_DAYS'] = {grace!r} must be a whole number of "
                f"days from 0 to {MAX_GRACE_DAYS}.",
                "e.g. 7",
            )
        )
    overdue = raw.get("OVERDUE_RETRY_AFTER", DEFAULTS["OVERDUE_RETRY_AFTER"])
    if isinstance(overdue, bool) or not isinstance(overdue, int) or not 1 <= overdue <= 86_400:
        errors.append(
            _error(
                92,
                f"USAGE_LIMITS['OVERDUE_RETRY_AFTER'] = {overdue!r} must be a whole number of "
                "seconds from 1 to 86400.",
                "e.g. 60: how long a client waits while a scheduled reset is due",
            )
        )
    timeout = raw.get("CACHE_TIMEOUT", DEFAULTS["CACHE_TIMEOUT"])
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        # Read with int() on every call: anything else would fail every check at run time.
        errors.append(
            _error(
                90,
                f"USAGE_LIMITS['CACHE_TIMEOUT'] = {timeout!r} must be a whole number of "
                "seconds, 0 or more.",
                "e.g. 300 (0 re-reads the plan and overrides on every check)",
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
            imported = import_string(str(path))
        except ImportError as exc:
            errors.append(
                _error(
                    13,
                    f"USAGE_LIMITS[{name!r}] = {path!r} does not import: {exc}",
                    "Give a dotted path to an importable callable or class.",
                )
            )
            continue
        if name == "STORE" and not (
            isinstance(imported, type) and issubclass(imported, UsageStore)
        ):
            # Otherwise the first counted request would fail with a TypeError.
            errors.append(
                _error(
                    91,
                    f"USAGE_LIMITS['STORE'] = {path!r} is not a UsageStore class.",
                    "Use usage_limits.backends.database.DatabaseStore or a subclass of "
                    "usage_limits.backends.base.UsageStore.",
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


# The reset endpoint's key should resist guessing: 32 characters of secrets.token_urlsafe().
MIN_RESET_KEY_LENGTH = 32


def _check_reset_key(raw: Mapping[str, Any]) -> list[CheckMessage]:
    name = raw.get("RESET_API_KEY_ENV", DEFAULTS["RESET_API_KEY_ENV"])
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return [
            _error(
                40,
                f"USAGE_LIMITS['RESET_API_KEY_ENV'] = {name!r} is not the name of an "
                "environment variable.",
                "Name the variable that holds the key, e.g. 'USAGE_LIMITS_RESET_API_KEY'; never "
                "put the key itself in settings.",
            )
        ]
    key = os.environ.get(name, "").strip()
    if key and len(key) < MIN_RESET_KEY_LENGTH:
        return [
            Warning(
                f"${name} (the key of POST /usage/reset-expired/) is shorter than "
                f"{MIN_RESET_KEY_LENGTH} characters.",
                hint='Generate one with: python -c "import secrets; '
                'print(secrets.token_urlsafe(32))"',
                id="usage_limits.W040",
            )
        ]
    return []


def _check_dashboard(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """History, feature units and the upgrade link (the dashboard's settings)."""
    errors = _boolean(
        raw, "HISTORY", 50, "True keeps daily usage for the history chart; False skips that write."
    )
    features = raw.get("FEATURES", {})
    for name, spec in features.items() if isinstance(features, Mapping) else ():
        unit = spec.get("unit") if isinstance(spec, Mapping) else None
        if unit is not None and unit not in UNITS:
            errors.append(
                _error(
                    51,
                    f"Feature {name!r} has unknown unit {unit!r}.",
                    f"Use one of: {', '.join(UNITS)} (or leave 'unit' out for plain counts).",
                )
            )
    upgrade_url = raw.get("UPGRADE_URL", DEFAULTS["UPGRADE_URL"])
    if upgrade_url is not None and (not isinstance(upgrade_url, str) or not upgrade_url):
        errors.append(
            _error(
                52,
                f"USAGE_LIMITS['UPGRADE_URL'] = {upgrade_url!r} must be a URL or None.",
                'e.g. "/billing/plans/" or "https://example.com/pricing"',
            )
        )
    return errors


@register(Tags.compatibility)
def check_event_settings(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Settings of the usage events API (``usage_limits.E060``...)."""
    raw = getattr(settings, "USAGE_LIMITS", {})
    if not isinstance(raw, Mapping):
        return []  # E001 already says so
    skew = raw.get("EVENT_CLOCK_SKEW_SECONDS", DEFAULTS["EVENT_CLOCK_SKEW_SECONDS"])
    if isinstance(skew, bool) or not isinstance(skew, int) or skew < 0:
        return [
            _error(
                60,
                f"USAGE_LIMITS['EVENT_CLOCK_SKEW_SECONDS'] must be a whole number of seconds >= 0, "
                f"got {skew!r}.",
                "e.g. 60: events stamped up to a minute ahead of this server's clock are accepted.",
            )
        ]
    return []


# --- enforcement at the edges (E020-E029, W020-W029) ---------------------------------------------

_MIDDLEWARE = "usage_limits.middleware.UsageLimitsMiddleware"
_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_CORS_MIDDLEWARE = "corsheaders.middleware.CorsMiddleware"
_ANONYMOUS_CHOICES = ("reject", "allow")


@register(Tags.compatibility)
def check_enforcement(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    raw = getattr(settings, "USAGE_LIMITS", {})
    if not isinstance(raw, Mapping):
        return []  # E001 already says so
    errors: list[CheckMessage] = []
    errors += _check_path_rules(raw)
    errors += _check_exempt_paths(raw)
    errors += _check_tenant_options(raw)
    errors += _check_billable_statuses(raw)
    errors += _check_callbacks(raw)
    errors += _check_middleware_order(raw)
    errors += _check_atomic_requests(raw)
    errors += _check_cors(raw)
    return errors


def _regex_error(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return f"{pattern!r} is not a string"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a valid regular expression ({exc})"
    return None


def _check_path_rules(raw: Mapping[str, Any]) -> list[CheckMessage]:
    rules = raw.get("PATH_RULES", DEFAULTS["PATH_RULES"])
    hint = (
        'e.g. {r"^/api/": "api_calls"} or '
        '{r"^/api/upload/": {"feature": "uploads", "count": "success"}}'
    )
    if not isinstance(rules, Mapping):
        return [_error(20, "USAGE_LIMITS['PATH_RULES'] must be a dict of regex to feature.", hint)]
    features = raw.get("FEATURES", {})
    declared = set(features) if isinstance(features, Mapping) else set()
    errors: list[CheckMessage] = []
    for pattern, value in rules.items():
        problem = _regex_error(pattern)
        if problem is not None:
            errors.append(_error(20, f"USAGE_LIMITS['PATH_RULES']: {problem}.", hint))
            continue
        where = f"USAGE_LIMITS['PATH_RULES'][{pattern!r}]"
        feature: Any
        if isinstance(value, str):
            feature, quantity, count = value, 1, "always"
        elif isinstance(value, Mapping) and not set(value) - {"feature", "quantity", "count"}:
            feature = value.get("feature")
            quantity, count = value.get("quantity", 1), value.get("count", "always")
        else:
            errors.append(
                _error(
                    21, f"{where} must be a feature name or a dict of feature/quantity/count.", hint
                )
            )
            continue
        if not isinstance(feature, str) or not feature:
            errors.append(_error(21, f"{where} names no feature.", hint))
        elif declared and feature not in declared:
            errors.append(
                _error(
                    21,
                    f"{where}: feature {feature!r} is not in USAGE_LIMITS['FEATURES'].",
                    f"Use one of: {', '.join(sorted(declared))}.",
                )
            )
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            errors.append(_error(21, f"{where}: quantity {quantity!r} must be 1 or more.", hint))
        if count not in ("always", "success"):
            errors.append(
                _error(
                    21,
                    f"{where}: count {count!r} is not a count mode.",
                    'Use "always" or "success".',
                )
            )
    return errors


def _check_exempt_paths(raw: Mapping[str, Any]) -> list[CheckMessage]:
    paths = raw.get("EXEMPT_PATHS", DEFAULTS["EXEMPT_PATHS"])
    hint = r'e.g. [r"^/admin/", r"^/static/", r"^/health/?$"]'
    if not isinstance(paths, list | tuple):
        return [_error(22, "USAGE_LIMITS['EXEMPT_PATHS'] must be a list of regexes.", hint)]
    errors: list[CheckMessage] = []
    for pattern in paths:
        problem = _regex_error(pattern)
        if problem is not None:
            errors.append(_error(22, f"USAGE_LIMITS['EXEMPT_PATHS']: {problem}.", hint))
    return errors


def _check_tenant_options(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    anonymous = raw.get("ANONYMOUS_REQUESTS", DEFAULTS["ANONYMOUS_REQUESTS"])
    if anonymous not in _ANONYMOUS_CHOICES:
        errors.append(
            _error(
                23,
                f"USAGE_LIMITS['ANONYMOUS_REQUESTS'] = {anonymous!r} is not a choice.",
                '"reject" (401/403) or "allow" (pass through uncounted).',
            )
        )
    header = raw.get("TENANT_HEADER", DEFAULTS["TENANT_HEADER"])
    if header is not None and (
        not isinstance(header, str) or not re.fullmatch(r"[A-Za-z0-9-]+", header)
    ):
        errors.append(
            _error(
                24,
                f"USAGE_LIMITS['TENANT_HEADER'] = {header!r} is not an HTTP header name.",
                'e.g. "X-Tenant", or None to turn header picking off.',
            )
        )
    errors += _boolean(
        raw,
        "REQUEST_EVENTS",
        25,
        "True writes a UsageEvent per request counted by the middleware.",
    )
    return errors


def _check_billable_statuses(raw: Mapping[str, Any]) -> list[CheckMessage]:
    statuses = raw.get("NOT_BILLABLE_STATUSES", DEFAULTS["NOT_BILLABLE_STATUSES"])
    hint = 'e.g. ["4xx", "5xx"] or ["5xx", 404, 409]'

    def valid(entry: Any) -> bool:
        if isinstance(entry, str):
            return re.fullmatch(r"[1-5]xx", entry) is not None
        return isinstance(entry, int) and not isinstance(entry, bool) and 100 <= entry <= 599

    if not isinstance(statuses, list | tuple) or not all(valid(s) for s in statuses):
        return [
            _error(
                26,
                f"USAGE_LIMITS['NOT_BILLABLE_STATUSES'] = {statuses!r} must list status codes "
                "or classes such as '5xx'.",
                hint,
            )
        ]
    return []


def _check_callbacks(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in ("ON_USAGE_WARNING", "ON_LIMIT_EXCEEDED"):
        value = raw.get(name, DEFAULTS[name])
        if value is None or value == "":
            continue
        entries = [value] if isinstance(value, str) or callable(value) else value
        if not isinstance(entries, list | tuple):
            entries = [entries]
        for entry in entries:
            target = entry
            if isinstance(entry, str):
                try:
                    target = import_string(entry)
                except ImportError as exc:
                    errors.append(
                        _error(
                            27,
                            f"USAGE_LIMITS[{name!r}] = {entry!r} does not import: {exc}",
                            "Give the dotted path of a function, e.g. 'myapp.alerts.on_warning'.",
                        )
                    )
                    continue
            if not callable(target):
                errors.append(
                    _error(
                        27,
                        f"USAGE_LIMITS[{name!r}]: {entry!r} is not callable.",
                        "Callbacks take tenant, feature, current, limit and percentage.",
                    )
                )
    return errors


def _check_middleware_order(raw: Mapping[str, Any]) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    messages: list[CheckMessage] = []
    if _MIDDLEWARE not in middleware:
        if raw.get("PATH_RULES"):
            messages.append(
                Warning(
                    "USAGE_LIMITS['PATH_RULES'] is set but UsageLimitsMiddleware is not in "
                    "MIDDLEWARE, so no path is enforced.",
                    hint=f"Add {_MIDDLEWARE!r} after {_AUTH_MIDDLEWARE!r}.",
                    id="usage_limits.W021",
                )
            )
        return messages
    default_resolver = (
        raw.get("TENANT_RESOLVER", DEFAULTS["TENANT_RESOLVER"]) == DEFAULTS["TENANT_RESOLVER"]
    )
    if default_resolver and (
        _AUTH_MIDDLEWARE not in middleware
        or middleware.index(_MIDDLEWARE) < middleware.index(_AUTH_MIDDLEWARE)
    ):
        messages.append(
            Warning(
                "UsageLimitsMiddleware runs before AuthenticationMiddleware: the default tenant "
                "resolver finds no user, so every enforced path answers 401.",
                hint=f"Place {_MIDDLEWARE!r} after {_AUTH_MIDDLEWARE!r}.",
                id="usage_limits.W020",
            )
        )
    return messages


def _check_atomic_requests(raw: Mapping[str, Any]) -> list[CheckMessage]:
    alias = raw.get("DATABASE_ALIAS", DEFAULTS["DATABASE_ALIAS"])
    database = settings.DATABASES.get(alias, {})
    if not database.get("ATOMIC_REQUESTS"):
        return []
    return [
        Warning(
            f"DATABASES[{alias!r}] has ATOMIC_REQUESTS: a view enforced with @require_quota or a "
            "mixin counts inside the view's transaction and holds the tenant's counter row until "
            "the view ends, so the tenant's requests queue up behind each other.",
            hint="Point USAGE_LIMITS['DATABASE_ALIAS'] at a second alias of the same database "
            "without ATOMIC_REQUESTS (see docs/enforcement.md), or enforce with the middleware, "
            "which counts before the view's transaction opens.",
            id="usage_limits.W022",
        )
    ]


def _check_cors(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """With django-cors-headers: can scripts on other origins see denials and read the fields?"""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if _CORS_MIDDLEWARE not in middleware:
        return []
    messages: list[CheckMessage] = []
    if (
        raw.get("PATH_RULES")
        and _MIDDLEWARE in middleware
        and middleware.index(_MIDDLEWARE) < middleware.index(_CORS_MIDDLEWARE)
    ):
        messages.append(
            Warning(
                "UsageLimitsMiddleware runs before CorsMiddleware: its refusals of PATH_RULES "
                "requests (429, 402, 401, 503) carry no CORS headers, so a browser on another "
                "origin hides them and its script sees a network error instead of the denial.",
                hint=f"Place {_CORS_MIDDLEWARE!r} above {_MIDDLEWARE!r} in MIDDLEWARE (as high "
                "as possible, as django-cors-headers advises).",
                id="usage_limits.W024",
            )
        )
    exposed = {str(name).lower() for name in getattr(settings, "CORS_EXPOSE_HEADERS", ())}
    # "*" exposes every field, but only to requests made without credentials (Fetch standard).
    wildcard = "*" in exposed and not getattr(settings, "CORS_ALLOW_CREDENTIALS", False)
    missing = [name for name in RATELIMIT_HEADERS if name.lower() not in exposed]
    if missing and not wildcard:
        messages.append(
            Warning(
                f"CORS_EXPOSE_HEADERS does not list {', '.join(missing)}: scripts on other "
                "origins cannot read how much quota is left or when to retry.",
                hint="from usage_limits import RATELIMIT_HEADERS, then "
                "CORS_EXPOSE_HEADERS = [*RATELIMIT_HEADERS] (with any fields of your own).",
                id="usage_limits.W023",
            )
        )
    return messages
