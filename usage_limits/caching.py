"""Django's cache as the app uses it: the configured alias, and keys namespaced by database.

The cache holds only what spares the database work (a denial already announced, the generation
of remembered request tenants), never what decides a count. Keys carry the database they speak
of, so two databases that share one cache server (a test run and the site, staging and
production) never read each other's entries.
"""

from __future__ import annotations

import hashlib

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.db import connections

from usage_limits.conf import conf

PREFIX = "usage_limits:v2"


def cache() -> BaseCache:
    return caches[conf.CACHE_ALIAS]


def database_tag() -> str:
    """A short name of the counters' database (vendor, host, port, name)."""
    settings = connections[conf.DATABASE_ALIAS].settings_dict
    identity = "|".join(
        str(settings.get(part) or "") for part in ("ENGINE", "HOST", "PORT", "NAME")
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def cache_key(*parts: object) -> str:
    return ":".join([PREFIX, database_tag(), *(str(part) for part in parts)])
