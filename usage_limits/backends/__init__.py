"""Loading the configured counter store (``USAGE_LIMITS["STORE"]``), once per process."""

from __future__ import annotations

import functools
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from usage_limits.backends.base import CounterChange, CounterKey, UsageStore
from usage_limits.conf import conf

__all__ = ["CounterChange", "CounterKey", "UsageStore", "get_store"]


@functools.cache
def _load_store(path: str) -> UsageStore:
    store_class = import_string(path)
    store = store_class()
    if not isinstance(store, UsageStore):
        raise TypeError(f"{path} is not a UsageStore")
    return store


def get_store() -> UsageStore:
    return _load_store(conf.STORE)


@receiver(setting_changed, dispatch_uid="usage_limits_reset_store")
def _reset_store(setting: str, **kwargs: Any) -> None:
    if setting == "USAGE_LIMITS":
        _load_store.cache_clear()
