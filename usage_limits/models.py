"""Plans, tenants and the counters that enforce their limits.

The counter a check reads is one :class:`UsageRecord` row per tenant, feature and period start,
found through a unique index, so enforcement costs the same whatever the size of the history.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

UNLIMITED = -1


class FeatureKind(models.TextChoices):
    METERED = "metered", _("Metered (resets every period)")
    ALLOCATION = "allocation", _("Allocation (a level that never resets)")
    BOOLEAN = "boolean", _("Boolean (included or not)")


class PeriodName(models.TextChoices):
    DAILY = "daily", _("Daily")
    WEEKLY = "weekly", _("Weekly")
    MONTHLY = "monthly", _("Monthly")
    YEARLY = "yearly", _("Yearly")
    BILLING_MONTHLY = "billing_monthly", _("Monthly, from the billing anchor")


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    TRIALING = "trialing", _("Trialing")
    PAST_DUE = "past_due", _("Past due")
    CANCELED = "canceled", _("Canceled")


class ResetMode(models.TextChoices):
    LAZY = "lazy", _("Lazy: a new period starts on first use")
    SCHEDULED = "scheduled", _("Scheduled: periods close when the reset job runs")
    MANUAL = "manual", _("Manual: only an operator resets")


class Plan(models.Model):
    code = models.CharField(
        _("code"), max_length=64, unique=True, help_text=_('Stable identifier, e.g. "FREE".')
    )
    name = models.CharField(_("name"), max_length=100)
    description = models.TextField(_("description"), blank=True)
    sort_order = models.PositiveIntegerField(_("sort order"), default=0)
    is_public = models.BooleanField(_("offered to new customers"), default=True)
    stripe_price_id = models.CharField(
        _("Stripe price id"), max_length=255, blank=True, db_index=True
    )
    # Moved whenever the plan or one of its limits changes (usage_limits.rules keeps a plan's
    # limits per process until then).
    rules_version = models.BigIntegerField(_("rules version"), default=0, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["sort_order", "code"]
        verbose_name = _("plan")
        verbose_name_plural = _("plans")

    def __str__(self) -> str:
        return self.name or self.code


class PlanLimit(models.Model):
    plan = models.ForeignKey(
        Plan, on_delete=models.CASCADE, related_name="limits", verbose_name=_("plan")
    )
    feature = models.CharField(_("feature"), max_length=64)
    kind = models.CharField(
        _("kind"), max_length=16, choices=FeatureKind.choices, default=FeatureKind.METERED
    )
    limit = models.BigIntegerField(
        _("limit"),
        null=True,
        blank=True,
        help_text=_("-1 or empty means unlimited. Boolean features: 1 included, 0 not included."),
    )
    period = models.CharField(
        _("period"),
        max_length=32,
        choices=PeriodName.choices,
        blank=True,
        help_text=_("Metered features only: how often the counter starts again."),
    )

    class Meta:
        ordering = ["plan", "feature"]
        verbose_name = _("plan limit")
        verbose_name_plural = _("plan limits")
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "feature"], name="usage_limits_planlimit_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(limit__isnull=True) | models.Q(limit__gte=UNLIMITED),
                name="usage_limits_planlimit_limit_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code}: {self.feature} = {describe_limit(self.limit, self.kind)}"

    def clean(self) -> None:
        validate_limit_fields(self.kind, self.limit, self.period)


class Tenant(models.Model):
    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, related_name="tenants", verbose_name=_("plan")
    )
    subscription_status = models.CharField(
        _("subscription status"),
        max_length=16,
        choices=SubscriptionStatus.choices,
        default=SubscriptionStatus.ACTIVE,
    )
    past_due_since = models.DateTimeField(_("past due since"), null=True, blank=True)
    billing_anchor = models.DateTimeField(
        _("billing anchor"),
        null=True,
        blank=True,
        help_text=_("Start of the subscription; billing-anchored periods count from here."),
    )
    reset_mode = models.CharField(
        _("reset mode"),
        max_length=16,
        choices=ResetMode.choices,
        blank=True,
        help_text=_("Empty: the USAGE_LIMITS['RESET_MODE'] setting."),
    )
    reset_period = models.CharField(
        _("reset period"),
        max_length=32,
        choices=PeriodName.choices,
        blank=True,
        help_text=_("Empty: each metered feature keeps its plan's period."),
    )
    counting_since = models.DateTimeField(
        _("counting since"),
        null=True,
        blank=True,
        help_text=_("Scheduled and manual reset modes: start of the period being counted."),
    )
    stripe_customer_id = models.CharField(
        _("Stripe customer id"), max_length=255, blank=True, db_index=True
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="TenantMembership",
        related_name="usage_tenants",
        blank=True,
        verbose_name=_("members"),
    )
    # Moved whenever what the tenant may use changes (its plan or the plan's limits, status,
    # period, overrides), in the change's own transaction: every process keeps the rules it
    # read with this value, and the store's counting statement admits nothing under rules whose
    # version is no longer the row's (usage_limits.rules, docs/architecture.md).
    rules_version = models.BigIntegerField(_("rules version"), default=0, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")
        permissions = [("reset_usage", _("Can reset a tenant's usage"))]

    def __str__(self) -> str:
        return self.name


class TenantMembership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        ADMIN = "admin", _("Admin")
        MEMBER = "member", _("Member")

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="memberships", verbose_name=_("tenant")
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="usage_memberships",
        verbose_name=_("user"),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.MEMBER)
    is_default = models.BooleanField(
        _("default tenant"), default=False, help_text=_("Used when no tenant is asked for.")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["tenant", "user"]
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"], name="usage_limits_membership_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class TenantLimitOverride(models.Model):
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="limit_overrides", verbose_name=_("tenant")
    )
    feature = models.CharField(_("feature"), max_length=64)
    limit = models.BigIntegerField(
        _("limit"), null=True, blank=True, help_text=_("-1 or empty means unlimited.")
    )
    reason = models.TextField(_("reason"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["tenant", "feature"]
        verbose_name = _("limit override")
        verbose_name_plural = _("limit overrides")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "feature"], name="usage_limits_override_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(limit__isnull=True) | models.Q(limit__gte=UNLIMITED),
                name="usage_limits_override_limit_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.feature} = {describe_limit(self.limit)}"

    def clean(self) -> None:
        if self.limit is not None and self.limit < UNLIMITED:
            raise ValidationError({"limit": _("Use -1 (or leave empty) for unlimited.")})


class UsageRecord(models.Model):
    """One counter: a tenant's use of a feature in one period.

    Written only by the store in :mod:`usage_limits.backends`, one atomic statement at a time.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="usage_records", verbose_name=_("tenant")
    )
    feature = models.CharField(_("feature"), max_length=64)
    period_key = models.CharField(_("period"), max_length=32)
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"), null=True, blank=True)
    used = models.BigIntegerField(_("used"), default=0)
    # Bookkeeping of the Redis store (docs/scaling.md); the database store never reads them. The
    # raw INSERT of the database store omits them, hence database-side defaults.
    redis_synced = models.BigIntegerField(
        _("value last exchanged with Redis"),
        default=0,
        db_default=0,
        help_text=_("The part of 'used' that the Redis counter also holds."),
    )
    redis_version = models.BigIntegerField(
        _("Redis exchanges"),
        default=0,
        db_default=0,
        help_text=_("Counts the times redis_synced was set; names the baseline of a difference."),
    )
    redis_stale = models.BooleanField(
        _("changed while Redis was unreachable"),
        default=False,
        db_default=False,
        db_index=True,
        help_text=_("The next flush adds used - redis_synced to the Redis counter."),
    )
    created_at = models.DateTimeField(_("created"))
    updated_at = models.DateTimeField(_("updated"))

    class Meta:
        ordering = ["-period_start", "tenant", "feature"]
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        constraints = [
            # The index every check goes through; also what makes period creation race-safe.
            models.UniqueConstraint(
                fields=["tenant", "feature", "period_start"], name="usage_limits_record_unique"
            )
        ]
        indexes = [
            models.Index(fields=["feature", "period_start"], name="usage_limits_rec_feat_idx")
        ]

    def __str__(self) -> str:
        return f"{self.tenant} · {self.feature} · {self.period_key}: {self.used}"


class UsageDailyBucket(models.Model):
    """Usage counted on one day (a date in ``USAGE_LIMITS["TIME_ZONE"]``): the history chart's data.

    Written by the store together with the counter (see :mod:`usage_limits.backends.base`), never
    read on the enforcement path. A reset leaves it alone: history records what was used, not what
    the counter reads now.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="daily_usage", verbose_name=_("tenant")
    )
    feature = models.CharField(_("feature"), max_length=64)
    day = models.DateField(_("day"))
    used = models.BigIntegerField(_("used"), default=0)
    # Bookkeeping of the Redis store's flush (docs/scaling.md); the database store never reads
    # them. Its raw upsert omits them, hence database-side defaults.
    redis_synced = models.BigIntegerField(
        _("value last copied from Redis"),
        default=0,
        db_default=0,
        help_text=_("The part of 'used' that the Redis bucket holds."),
    )
    redis_token = models.CharField(
        _("Redis bucket"),
        max_length=32,
        default="",
        db_default="",
        blank=True,
        help_text=_("Names the Redis bucket redis_synced came from (a new one starts from zero)."),
    )

    class Meta:
        ordering = ["-day", "tenant", "feature"]
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        constraints = [
            # The upsert's conflict target, and the index the chart's range read goes through.
            models.UniqueConstraint(
                fields=["tenant", "feature", "day"], name="usage_limits_daily_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant} · {self.feature} · {self.day:%Y-%m-%d}: {self.used}"


class UsageReset(models.Model):
    """Audit trail: every reset, by whom, when, and what the counter read before."""

    class Source(models.TextChoices):
        ADMIN = "admin", _("Django admin")
        API = "api", _("API")
        COMMAND = "command", _("Management command")
        SCHEDULED = "scheduled", _("Scheduled reset")
        CODE = "code", _("Application code")

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="usage_resets", verbose_name=_("tenant")
    )
    feature = models.CharField(_("feature"), max_length=64)
    period_key = models.CharField(_("period"), max_length=32)
    period_start = models.DateTimeField(_("period start"))
    value_before = models.BigIntegerField(_("value before"))
    value_after = models.BigIntegerField(_("value after"), default=0)
    reason = models.TextField(_("reason"), blank=True)
    source = models.CharField(
        _("source"), max_length=16, choices=Source.choices, default=Source.CODE
    )
    performed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("performed by"),
    )
    # Kept as text too, so the audit trail still names a user that was deleted since.
    performed_by_name = models.CharField(_("performed by (name)"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("usage reset")
        verbose_name_plural = _("usage resets")

    def __str__(self) -> str:
        who = self.performed_by_name or _("system")
        return f"{self.tenant} · {self.feature} · {self.value_before} → {self.value_after} by {who}"


class UsageEvent(models.Model):
    """A unit of recorded usage with its idempotency key: the ledger behind replays and billing."""

    class ReportState(models.TextChoices):
        NOT_REPORTED = "not_reported", _("Not reported (no meter, or given back)")
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed permanently")

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="usage_events", verbose_name=_("tenant")
    )
    feature = models.CharField(_("feature"), max_length=64)
    quantity = models.BigIntegerField(_("quantity"))
    # NULL, not "": events without a key must not collide in the unique constraint below.
    idempotency_key = models.CharField(  # noqa: DJ001
        _("idempotency key"), max_length=100, null=True, blank=True
    )
    timestamp = models.DateTimeField(_("timestamp"))
    period_key = models.CharField(_("period"), max_length=32)
    accepted = models.BooleanField(_("accepted"), default=True)
    used_after = models.BigIntegerField(_("used after"), null=True, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    report_state = models.CharField(
        _("report state"),
        max_length=16,
        choices=ReportState.choices,
        default=ReportState.NOT_REPORTED,
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    reported_at = models.DateTimeField(_("reported"), null=True, blank=True)
    # The meter event ``identifier`` Stripe deduplicates on, fixed before the first send so that a
    # reporter that dies between sending and marking sends the very same identifier again.
    # Events pre-aggregated into one meter event share it.
    report_identifier = models.CharField(
        _("Stripe identifier"), max_length=100, blank=True, db_index=True
    )
    # The reporter run holding the event until ``next_attempt_at`` (a lease, not a row lock).
    claimed_by = models.CharField(_("claimed by"), max_length=32, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        verbose_name = _("usage event")
        verbose_name_plural = _("usage events")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="usage_limits_event_idempotency"
            )
        ]
        indexes = [
            models.Index(fields=["report_state", "next_attempt_at"], name="usage_limits_evt_report")
        ]

    def __str__(self) -> str:
        return f"{self.tenant} · {self.feature} +{self.quantity} @ {self.timestamp:%Y-%m-%d %H:%M}"


class UsageAlert(models.Model):
    """A warning level already announced for a tenant, feature and period (fires once)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    feature = models.CharField(_("feature"), max_length=64)
    period_start = models.DateTimeField(_("period start"))
    # a warning percentage (80, 100), or EXCEEDED for the first denial of the period
    level = models.IntegerField(_("level"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    EXCEEDED = -1

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("usage alert")
        verbose_name_plural = _("usage alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "feature", "period_start", "level"],
                name="usage_limits_alert_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant} · {self.feature} · {self.level}"


def describe_limit(limit: int | None, kind: str = FeatureKind.METERED) -> str:
    if kind == FeatureKind.BOOLEAN:
        return "included" if limit else "not included"
    if limit is None or limit == UNLIMITED:
        return "unlimited"
    return str(limit)


def validate_limit_fields(kind: str, limit: int | None, period: str) -> None:
    errors: dict[str, str] = {}
    if limit is not None and limit < UNLIMITED:
        errors["limit"] = str(_("Use -1 (or leave empty) for unlimited."))
    if kind == FeatureKind.BOOLEAN and limit not in (0, 1):
        errors["limit"] = str(_("Boolean features take 1 (included) or 0 (not included)."))
    if kind != FeatureKind.METERED and period:
        errors["period"] = str(_("Only metered features have a period."))
    if errors:
        raise ValidationError(errors)


class StripeWebhookEvent(models.Model):
    """A Stripe webhook event already handled: each event id is processed once."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", _("Applied")
        IGNORED = "ignored", _("Ignored (event type not handled)")
        UNKNOWN_CUSTOMER = "unknown_customer", _("No tenant for the customer")
        STALE = "stale", _("Older than a change already applied")
        INVALID = "invalid", _("Signed, but not a Stripe event (refused with 400)")

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(_("Stripe event id"), max_length=255, unique=True)
    type = models.CharField(_("type"), max_length=100, db_index=True)
    customer_id = models.CharField(_("Stripe customer id"), max_length=255, blank=True)
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("tenant"),
    )
    # when Stripe created the event: deliveries arrive out of order, this orders them
    created = models.DateTimeField(_("created at Stripe"))
    livemode = models.BooleanField(_("live mode"), default=False)
    outcome = models.CharField(_("outcome"), max_length=20, choices=Outcome.choices)
    detail = models.TextField(_("detail"), blank=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("Stripe webhook event")
        verbose_name_plural = _("Stripe webhook events")
        indexes = [
            models.Index(fields=["customer_id", "created"], name="usage_limits_whk_customer")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.outcome})"


class UsageOverview(Tenant):
    """The admin's usage overview, listed on the admin index like a model (no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = _("usage overview")
        verbose_name_plural = _("usage overview")
