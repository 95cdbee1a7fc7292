"""Settings of the example project: a small site that uses ``usage_limits``.

Everything that differs between machines comes from the environment (or an optional ``.env`` file
beside ``manage.py``) through django-environ. With nothing set, the site runs on SQLite in
``example.sqlite3`` at the top of the repository, in DEBUG mode, with a development secret key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)  # a demo: on unless the environment says otherwise
# DEVELOPMENT ONLY: this default is public. Set SECRET_KEY in the environment anywhere real.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-example-project-dev-only-not-secret")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

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
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The example site's own pages; the app's templates ship inside usage_limits/.
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'example.sqlite3'}")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # IMMEDIATE: a transaction takes the write lock up front instead of failing to upgrade a read
    # lock ("database is locked"); WAL: readers do not block the writer. See docs/configuration.md.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    # Shared by every process, so a plan change is seen at once everywhere. Short timeouts: the
    # client's defaults wait seconds (or a minute) on a dead server.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.1, "socket_timeout": 0.1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "static_root"

GIB = 1024**3

USAGE_LIMITS = {
    # where the dashboard's "Upgrade plan" button leads
    "UPGRADE_URL": "/pricing/",
    "FEATURES": {
        "api_calls": {"kind": "metered", "period": "monthly", "label": "API calls"},
        "projects": {"kind": "allocation", "label": "Projects"},
        "seats": {"kind": "allocation", "label": "Seats"},
        "storage": {"kind": "allocation", "label": "Storage", "unit": "bytes"},
        "advanced_analytics": {"kind": "boolean", "label": "Advanced analytics"},
    },
    # -1 means unlimited.
    "PLANS": {
        "FREE": {
            "api_calls": 100,
            "projects": 3,
            "seats": 1,
            "storage": 1 * GIB,
            "advanced_analytics": False,
        },
        "STARTER": {
            "api_calls": 1000,
            "projects": 10,
            "seats": 5,
            "storage": 10 * GIB,
            "advanced_analytics": False,
        },
        "PRO": {
            "api_calls": -1,
            "projects": -1,
            "seats": 20,
            "storage": 100 * GIB,
            "advanced_analytics": True,
        },
        "ENTERPRISE": {
            "api_calls": -1,
            "projects": -1,
            "seats": -1,
            "storage": -1,
            "advanced_analytics": True,
        },
    },
}

# The app's REST API (/api/usage/...): session sign-in for the browsable pages, tokens for services.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
# Swagger UI and Redoc from the installed sidecar package, not a CDN.
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
