"""System checks for the Redis store's settings (``usage_limits.E080``-``E089``, ``W080``-).

The keys are validated whatever the store, so a typo shows before the day Redis is switched on;
the URL and the client library are required only when the store is the Redis store.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from usage_limits.conf import DEFAULTS

REDIS_STORE_PATH = "usage_limits.backends.redis.RedisStore"
FAIL_MODES = ("open", "closed")
URL_SCHEMES = ("redis", "rediss", "unix")
# Above this a request can visibly stall on a slow Redis before the fail mode applies.
SLOW_TIMEOUT_SECONDS = 1.0
# The flush must get to a counter before it expires; below this it may not.
SHORT_EXPIRY_SECONDS = 3600


def _error(id_: int, msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id=f"usage_limits.E{id_:03d}")


def _warning(id_: int, msg: str, hint: str) -> Warning:
    return Warning(msg, hint=hint, id=f"usage_limits.W{id_:03d}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def uses_redis_store(raw: Mapping[str, Any]) -> bool:
    path = str(raw.get("STORE", DEFAULTS["STORE"]))
    if path == REDIS_STORE_PATH:
        return True
    if importlib.util.find_spec("redis") is None:
        return False
    try:
        from usage_limits.backends.redis import RedisStore

        store_class = import_string(path)
    except ImportError:
        return False
    return isinstance(store_class, type) and issubclass(store_class, RedisStore)


def check_redis_settings(raw: Mapping[str, Any]) -> list[CheckMessage]:
    def value(name: str) -> Any:
        return raw.get(name, DEFAULTS[name])

    errors: list[CheckMessage] = []
    if uses_redis_store(raw):
        if importlib.util.find_spec("redis") is None:
            errors.append(
                _error(
                    87,
                    "The Redis store needs the redis client library, which is not installed.",
                    'pip install "django-usage-limits[redis]"',
                )
            )
        url = value("REDIS_URL") or os.environ.get("REDIS_URL")
        if not url:
            errors.append(
                _error(
                    80,
                    "The Redis store is configured but no Redis URL is set.",
                    'Set USAGE_LIMITS["REDIS_URL"] (e.g. "redis://127.0.0.1:6379/0") or the '
                    "REDIS_URL environment variable.",
                )
            )
        elif not isinstance(url, str) or urlsplit(url).scheme not in URL_SCHEMES:
            errors.append(
                _error(
                    80,
                    f"REDIS_URL = {url!r} is not a Redis URL.",
                    f"Use one of the schemes {', '.join(URL_SCHEMES)}, e.g. redis://host:6379/0.",
                )
            )
    mode = value("REDIS_FAIL_MODE")
    if mode not in FAIL_MODES:
        errors.append(
            _error(
                81,
                f"USAGE_LIMITS['REDIS_FAIL_MODE'] = {mode!r} is not a fail mode.",
                "Use 'open' (count in the database during an outage) or 'closed' (refuse).",
            )
        )
    for name in ("REDIS_CONNECT_TIMEOUT", "REDIS_SOCKET_TIMEOUT"):
        timeout = value(name)
        if not _number(timeout) or timeout <= 0:
            errors.append(
                _error(
                    82,
                    f"USAGE_LIMITS[{name!r}] = {timeout!r} must be a positive number of seconds.",
                    "e.g. 0.1",
                )
            )
        elif timeout > SLOW_TIMEOUT_SECONDS:
            errors.append(
                _warning(
                    80,
                    f"USAGE_LIMITS[{name!r}] = {timeout} s: a request may wait that long (twice, "
                    "with a retry) for a Redis that does not answer.",
                    "Keep Redis timeouts around 0.05 to 0.1 s; the fail mode handles the rest.",
                )
            )
    retries = value("REDIS_RETRIES")
    if retries not in (0, 1) or isinstance(retries, bool):
        errors.append(
            _error(
                83,
                f"USAGE_LIMITS['REDIS_RETRIES'] = {retries!r} must be 0 or 1.",
                "More retries multiply the time a request waits for a Redis that is gone.",
            )
        )
    failures = value("REDIS_BREAKER_FAILURES")
    pause = value("REDIS_BREAKER_SECONDS")
    interval = value("REDIS_FAIL_LOG_INTERVAL")
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        errors.append(
            _error(
                84,
                f"USAGE_LIMITS['REDIS_BREAKER_FAILURES'] = {failures!r} must be a whole number, "
                "1 or more.",
                "e.g. 3",
            )
        )
    for name, number in (("REDIS_BREAKER_SECONDS", pause), ("REDIS_FAIL_LOG_INTERVAL", interval)):
        if not _number(number) or number < 0:
            errors.append(
                _error(
                    84,
                    f"USAGE_LIMITS[{name!r}] = {number!r} must be a number of seconds, 0 or more.",
                    "e.g. 10",
                )
            )
    prefix = value("REDIS_KEY_PREFIX")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{}*?[] \t\n"):
        errors.append(
            _error(
                85,
                f"USAGE_LIMITS['REDIS_KEY_PREFIX'] = {prefix!r} is not a usable key prefix.",
                "Use a short word without braces, glob characters or spaces, e.g. 'uq'.",
            )
        )
    expiry = value("REDIS_EXPIRE_AFTER_PERIOD")
    if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry < 0:
        errors.append(
            _error(
                86,
                f"USAGE_LIMITS['REDIS_EXPIRE_AFTER_PERIOD'] = {expiry!r} must be a whole number "
                "of seconds, 0 or more.",
                "e.g. 604800 (a week)",
            )
        )
    elif expiry < SHORT_EXPIRY_SECONDS:
        errors.append(
            _warning(
                81,
                f"USAGE_LIMITS['REDIS_EXPIRE_AFTER_PERIOD'] = {expiry} s: a period's counter may "
                "leave Redis before the flush has copied its last units.",
                "Keep it well above the flush interval, e.g. a day or a week.",
            )
        )
    if not isinstance(value("REDIS_CLUSTER"), bool):
        errors.append(
            _error(
                88,
                "USAGE_LIMITS['REDIS_CLUSTER'] must be True or False.",
                "True connects with redis-py's RedisCluster.",
            )
        )
    return errors
