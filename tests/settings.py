"""Settings for the test suite.

The database comes from ``DATABASE_URL`` (SQLite in a file by default, so that threaded tests can
share it), which is how ``.ci/run`` runs the same suite on PostgreSQL and MariaDB.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent
env = environ.Env()

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

DATABASES = {
    "default": env.db_url_config(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'tests.sqlite3'}"
    )
}
_suffix = os.environ.get("TEST_DB_SUFFIX", "")
_engine = DATABASES["default"]["ENGINE"]
if _engine.endswith("sqlite3"):
    # A file, not the default in-memory database: threads in concurrency tests need to share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test_usage_limits{_suffix}.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;", "timeout": 20}
    )
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_usage_limits{_suffix}"}
if _engine.endswith("mysql"):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"charset": "utf8mb4", "isolation_level": "read committed"}
    )
    DATABASES["default"]["TEST"].update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"})

# A second connection to the same database, for counters written outside the caller's
# transaction (USAGE_LIMITS["DATABASE_ALIAS"]); tests mirror it onto the default test database.
DATABASES["quota"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "usage_limits",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The API authenticates by token first (so an anonymous call gets 401 with WWW-Authenticate),
# then by session (browsers, the browsable schema page).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

USAGE_LIMITS = {
    "FEATURES": {
        "api_calls": {"kind": "metered", "period": "monthly", "label": "API calls"},
        "projects": {"kind": "allocation", "label": "Projects"},
        "seats": {"kind": "allocation", "label": "Seats"},
        "advanced_analytics": {"kind": "boolean", "label": "Advanced analytics"},
    },
    "PLANS": {
        "FREE": {"api_calls": 100, "projects": 3, "seats": 1, "advanced_analytics": False},
        "STARTER": {"api_calls": 1000, "projects": 10, "seats": 5, "advanced_analytics": False},
        "PRO": {"api_calls": -1, "projects": -1, "seats": 20, "advanced_analytics": True},
        "ENTERPRISE": {"api_calls": -1, "projects": -1, "seats": -1, "advanced_analytics": True},
    },
}
