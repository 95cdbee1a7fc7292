from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class UsageLimitsConfig(AppConfig):
    name = "usage_limits"
    verbose_name = _("Usage limits")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the checks, the cache invalidation receivers and the settings' callbacks.
        from usage_limits import callbacks, checks, invalidation  # noqa: F401
