from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class UsageLimitsConfig(AppConfig):
    name = "usage_limits"
    verbose_name = _("Usage limits")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from usage_limits import checks, invalidation  # noqa: F401  (registers checks and receivers)
        from usage_limits.billing import checks as billing_checks  # noqa: F401
        from usage_limits.callbacks import connect_callbacks

        connect_callbacks()
