"""Django settings for the benchmarks (``python bench/stores.py`` sets them up itself).

``BENCH_DATABASE_URL`` picks the database of one benchmark process; Redis is ``REDIS_URL``
(database 8 by default), shared by the Redis store, django-redis, django-ratelimit and DRF.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ

env = environ.Env()

SECRET_KEY = "bench-only-not-secret"  # noqa: S105
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8")

_default_sqlite = Path(tempfile.gettempdir()) / "usage_limits_bench.sqlite3"
DATABASES = {
    "default": env.db_url_config(
        os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{_default_sqlite}"
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;", "timeout": 20}
    )

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "usage_limits",
]
MIDDLEWARE: list[str] = []
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "bench",
    },
}
RATELIMIT_USE_CACHE = "redis"
REST_FRAMEWORK = {"UNAUTHENTICATED_USER": None}

USAGE_LIMITS = {
    "FEATURES": {"api_calls": {"kind": "metered", "period": "monthly"}},
    # A limit nobody reaches: every row measures the admitted path (the guard still runs).
    "PLANS": {"BENCH": {"api_calls": 10**12}},
    "REDIS_URL": REDIS_URL,
    "REDIS_KEY_PREFIX": "uqbench",
    # The tenant an authentication layer found (request.api_tenant), else the user's membership.
    "TENANT_RESOLVER": "bench.stores.bench_tenant_resolver",
}
