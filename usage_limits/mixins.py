"""Class-based view mixins: the decorators' behaviour for ``View`` subclasses.

Put the mixin before the view class; it works for views with ``def`` or ``async def`` handlers::

    class ExportView(QuotaRequiredMixin, View):
        quota_feature = "exports"
        quota_count = "success"

        def post(self, request): ...

    class AnalyticsView(FeatureRequiredMixin, TemplateView):
        required_feature = "advanced_analytics"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from usage_limits.enforcement import (
    CountMode,
    Quantity,
    QuotaRule,
    aenforce,
    arequire_feature,
    enforce,
    require_feature_sync,
)

if TYPE_CHECKING:
    from django.views import View as _ViewBase
else:
    _ViewBase = object

__all__ = ["FeatureRequiredMixin", "QuotaRequiredMixin"]


class QuotaRequiredMixin(_ViewBase):
    """Count ``quota_quantity`` of ``quota_feature`` before the handler runs (see
    :func:`usage_limits.decorators.require_quota`)."""

    quota_feature: str | None = None
    quota_quantity: int = 1
    quota_count: CountMode = "always"

    def get_quota_quantity(self, request: HttpRequest) -> int:
        """Override for a quantity computed from the request (bytes uploaded, tokens asked)."""
        return self.quota_quantity

    def get_quota_rule(self) -> QuotaRule:
        """Override to pick the feature per request (``self.request`` is set)."""
        if not self.quota_feature:
            raise ImproperlyConfigured(
                f"{type(self).__name__} uses QuotaRequiredMixin without a quota_feature."
            )
        quantity: Quantity = self.get_quota_quantity
        if type(self).get_quota_quantity is QuotaRequiredMixin.get_quota_quantity:
            quantity = self.quota_quantity
        return QuotaRule(self.quota_feature, quantity, self.quota_count)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        rule = self.get_quota_rule()
        handle: Callable[..., Any] = super().dispatch
        if self.view_is_async:
            return aenforce(request, rule, lambda: handle(request, *args, **kwargs))
        return enforce(request, rule, lambda: handle(request, *args, **kwargs))


class FeatureRequiredMixin(_ViewBase):
    """Answer 403 unless the tenant's plan includes ``required_feature``."""

    required_feature: str | None = None

    def get_required_feature(self) -> str:
        if not self.required_feature:
            raise ImproperlyConfigured(
                f"{type(self).__name__} uses FeatureRequiredMixin without a required_feature."
            )
        return self.required_feature

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        feature = self.get_required_feature()
        handle: Callable[..., Any] = super().dispatch
        if self.view_is_async:
            return arequire_feature(request, feature, lambda: handle(request, *args, **kwargs))
        return require_feature_sync(request, feature, lambda: handle(request, *args, **kwargs))
