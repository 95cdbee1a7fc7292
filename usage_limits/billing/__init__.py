"""Billing: the usage ledger's trip to Stripe, Stripe's webhooks, and overage estimates.

Nothing here runs unless ``USAGE_LIMITS["BILLING"]`` asks for it; see docs/billing.md.
Modules are imported by path (``usage_limits.billing.reporter``...), never from here, so that
importing the package stays free of models and of the ``stripe`` SDK.
"""
