"""Settings for the benchmarks: the app alone, on the database named by ``DATABASE_URL``.

They run against a database of their own (``bench_usage_limits`` on servers, a file in /tmp for
SQLite), never the test or example databases.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ

env = environ.Env()
SECRET_KEY = "bench-only"  # noqa: S105 - never served
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_url = (
    os.environ.get("DATABASE_URL")
    or f"sqlite:///{Path(tempfile.gettempdir()) / 'bench_usage_limits.sqlite3'}"
)
DATABASES = {"default": env.db_url_config(_url)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
        "timeout": 20,
    }
else:
    DATABASES["default"]["NAME"] = "bench_usage_limits"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "usage_limits",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
USAGE_LIMITS = {
    "FEATURES": {"api_calls": {"kind": "metered", "period": "monthly"}},
    "PLANS": {"BENCH": {"api_calls": 10**15}},
}
