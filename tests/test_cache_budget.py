"""An enforced request costs the store's one statement plus at most one cache round trip.

Counted with a cache that records every call, shared between processes (a file cache stands in
for Redis or Memcached: the app treats any cache but LocMem and Dummy as shared).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache.backends.filebased import FileBasedCache
from django.test import Client

from tests.enforcement_app.support import limited_tenant, member  # noqa: F401  (fixtures)

CALLS: Counter[str] = Counter()


class CountingCache(FileBasedCache):
    """A file cache that counts the calls the app makes (each one a round trip on a server)."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        CALLS["get"] += 1
        return super().get(*args, **kwargs)

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        CALLS["get_many"] += 1
        return super().get_many(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> None:
        CALLS["set"] += 1
        super().set(*args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> bool:
        CALLS["add"] += 1
        return super().add(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        CALLS["delete"] += 1
        return super().delete(*args, **kwargs)


@pytest.fixture
def counting_cache(settings: Any, tmp_path: Any) -> Counter[str]:
    settings.CACHES = {
        "default": {"BACKEND": f"{__name__}.CountingCache", "LOCATION": str(tmp_path)}
    }
    CALLS.clear()
    return CALLS


pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.enforcement_app.urls")]


def test_an_enforced_request_makes_at_most_one_cache_call(
    client: Client,
    member: AbstractBaseUser,  # noqa: F811
    counting_cache: Counter[str],
) -> None:
    client.force_login(member)
    assert client.get("/fn/quota/").status_code == 200  # first use: rules read, period row made
    counting_cache.clear()
    assert client.get("/fn/quota/").status_code == 200
    # The request tenants' generation (the rules are checked by the counting statement itself).
    assert sum(counting_cache.values()) <= 1, counting_cache
