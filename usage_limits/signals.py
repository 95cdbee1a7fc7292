"""Signals the engine sends, always after the transaction that changed the counter commits.

* ``threshold_crossed``: usage reached a warning level (``WARNING_THRESHOLDS``, default 80 and
  100 %). Sent once per tenant, feature, period and level. Arguments: ``tenant_id``, ``feature``,
  ``threshold`` (the percentage), ``current``, ``limit``, ``percentage``, ``period``.
* ``quota_exceeded``: the first request of a period that a limit denied, or the first overage
  recorded by ``increment_usage``. Same arguments without ``threshold``.
* ``usage_reset``: a counter was reset. Arguments: ``tenant_id``, ``feature``, ``period``,
  ``value_before``, ``reset`` (the :class:`~usage_limits.models.UsageReset` row).
"""

from __future__ import annotations

from django.dispatch import Signal

threshold_crossed = Signal()
quota_exceeded = Signal()
usage_reset = Signal()
