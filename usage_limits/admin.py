"""The operators' admin: plans and their limits, tenants, overrides, counters and the reset audit.

Everything that changes usage goes through the engine (``reset_usage``), so resets made here write
the same audit rows and send the same signals as resets made in code; plan changes go through
``Tenant.save()`` so the cached rules are dropped at once. Counters and the audit trail are
read-only: a counter edited by hand would bypass the atomic store, and an audit trail that can be
edited is not one. Each action writes a ``LogEntry`` per tenant, as the rest of the admin does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from usage_limits.conf import conf
from usage_limits.engine import get_usage, reset_usage
from usage_limits.exceptions import UsageLimitsError
from usage_limits.levels import usage_level
from usage_limits.models import (
    FeatureKind,
    Plan,
    PlanLimit,
    ResetMode,
    Tenant,
    TenantLimitOverride,
    TenantMembership,
    UsageAlert,
    UsageOverview,
    UsageRecord,
    UsageReset,
    describe_limit,
)
from usage_limits.numbers import primary_key
from usage_limits.reporting import (
    LevelFilter,
    at_level,
    closest_to_limits,
    current_counters,
    feature_order,
    over_limit,
    status_counts,
    with_effective_limits,
)
from usage_limits.resets import counting_since_for
from usage_limits.results import TenantUsage
from usage_limits.rules import known_features

CSS = {"all": ["usage_limits/admin/usage_limits.css"]}
# A confirmation page lists the counters of at most this many tenants (the action covers all).
PREVIEW_TENANTS = 50
OVERVIEW_PER_FEATURE = 20
OVERVIEW_OVER_LIMIT = 100


def _changelist_url(model: type[Any], **params: Any) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _change_url(obj: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Listed and viewable (with the view permission), never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- plans -------------------------------------------------------------------------------------


class PlanLimitInline(admin.TabularInline):  # type: ignore[type-arg]
    model = PlanLimit
    extra = 0
    fields = ("feature", "kind", "limit", "period")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("code", "name", "limits_summary", "tenant_count", "is_public", "sort_order")
    list_filter = ("is_public",)
    search_fields = ("code", "name", "stripe_price_id")
    readonly_fields = ("created_at", "updated_at")
    inlines = [PlanLimitInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plan]:
        plans: QuerySet[Plan] = super().get_queryset(request)
        return plans.annotate(tenant_total=Count("tenants")).prefetch_related("limits")

    @admin.display(description=_("limits"))
    def limits_summary(self, plan: Plan) -> str:
        limits = {limit.feature: limit for limit in plan.limits.all()}
        return ", ".join(
            f"{feature}: {describe_limit(limits[feature].limit, limits[feature].kind)}"
            for feature in feature_order(limits)
        )

    @admin.display(description=_("tenants"), ordering="tenant_total")
    def tenant_count(self, plan: Plan) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>',
            _changelist_url(Tenant, plan__id__exact=plan.pk),
            plan.tenant_total,  # type: ignore[attr-defined]
        )


# --- tenants -----------------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = TenantMembership
    extra = 0
    fields = ("user", "role", "is_default")
    raw_id_fields = ("user",)


class LimitOverrideForm(forms.ModelForm):  # type: ignore[type-arg]
    """An override names a feature from a list, so a typo cannot create a limit nothing reads."""

    class Meta:
        model = TenantLimitOverride
        fields = ("tenant", "feature", "limit", "reason")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = set(known_features())
        if self.instance.feature:
            names.add(self.instance.feature)
        choices = [("", "---------")] + [(name, name) for name in feature_order(names)]
        self.fields["feature"].widget = forms.Select(choices=choices)

    def clean_feature(self) -> str:
        feature = str(self.cleaned_data["feature"]).strip()
        if feature not in known_features() and feature != self.instance.feature:
            raise ValidationError(_("Unknown feature %(feature)r."), params={"feature": feature})
        return feature


class LimitOverrideInline(admin.TabularInline):  # type: ignore[type-arg]
    model = TenantLimitOverride
    form = LimitOverrideForm
    extra = 0
    fields = ("feature", "limit", "reason", "created_by")
    readonly_fields = ("created_by",)


class ResetUsageForm(forms.Form):
    feature = forms.ChoiceField(
        label=_("Feature"),
        required=False,
        help_text=_("Allocations (seats, projects) are levels, not reset here."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept in the audit trail with your name and the values before the reset."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        metered = PlanLimit.objects.filter(kind=FeatureKind.METERED).values_list(
            "feature", flat=True
        )
        declared = [
            name for name, spec in conf.FEATURES.items() if spec.get("kind") == FeatureKind.METERED
        ]
        names = feature_order({*metered, *declared})
        field = self.fields["feature"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", _("Every metered feature"))] + [(name, name) for name in names]

    def clean_reason(self) -> str:
        reason = str(self.cleaned_data["reason"]).strip()
        if not reason:
            raise ValidationError(_("Say why the usage is reset."))
        return reason


class ChangePlanForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.all(), label=_("New plan"))


class EffectiveResetModeFilter(admin.SimpleListFilter):
    """The mode a tenant actually uses: its own, or USAGE_LIMITS["RESET_MODE"] when it has none."""

    title = _("reset mode")
    parameter_name = "reset_mode"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(str(value), str(label).split(":")[0]) for value, label in ResetMode.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in ResetMode.values:
            return queryset
        if value == conf.RESET_MODE:
            return queryset.filter(reset_mode__in=[value, ""])
        return queryset.filter(reset_mode=value)


@dataclass(frozen=True, slots=True)
class _TenantPreview:
    tenant: Tenant
    usage: TenantUsage | None
    error: str = ""


class TenantAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "name",
        "slug",
        "plan",
        "subscription_status",
        "reset_mode_display",
        "created_at",
    )
    list_filter = ("plan", "subscription_status", EffectiveResetModeFilter)
    list_select_related = ("plan",)
    readonly_fields = ("usage_panel", "created_at", "updated_at")
    inlines = [MembershipInline, LimitOverrideInline]
    actions = ["reset_current_usage", "change_plan"]
    fieldsets = (
        (None, {"fields": ("name", "slug", "plan")}),
        (_("Current usage"), {"fields": ("usage_panel",)}),
        (
            _("Subscription"),
            {
                "fields": (
                    "subscription_status",
                    "past_due_since",
                    "billing_anchor",
                    "stripe_customer_id",
                )
            },
        ),
        (_("Resets"), {"fields": ("reset_mode", "counting_since")}),
        (_("History"), {"fields": ("created_at", "updated_at"), "classes": ["collapse"]}),
    )
    # Actions a user may only run with a permission; a POST naming one without it is refused.
    guarded_actions = ("reset_current_usage", "change_plan")

    search_fields = ("name", "slug", "stripe_customer_id")

    class Media:
        css = CSS

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        # and the members' usernames, whatever the user model calls the field
        username = get_user_model().USERNAME_FIELD
        return (*self.search_fields, f"memberships__user__{username}")

    # -- the usage panel

    @admin.display(description=_("meters"))
    def usage_panel(self, tenant: Tenant) -> str:
        if tenant.pk is None:
            return "-"
        try:
            usage = get_usage(tenant)
        except UsageLimitsError as exc:  # e.g. the store is down: the page must still open
            return str(_("Usage unavailable: %(error)s") % {"error": exc})
        return render_to_string(
            "admin/usage_limits/tenant/usage_panel.html",
            {
                "usage": usage,
                "now": timezone.now(),
                "records_url": _changelist_url(UsageRecord, tenant__id__exact=tenant.pk),
                "resets_url": _changelist_url(UsageReset, tenant__id__exact=tenant.pk),
            },
        )

    @admin.display(description=_("reset mode"), ordering="reset_mode")
    def reset_mode_display(self, tenant: Tenant) -> str:
        if tenant.reset_mode:
            return str(ResetMode(tenant.reset_mode).label).split(":")[0]
        return str(_("%(mode)s (default)") % {"mode": conf.RESET_MODE.capitalize()})

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        # A new reset mode re-bases counting_since, unless the operator set it in the same form.
        if "reset_mode" in form.changed_data and "counting_since" not in form.changed_data:
            previous = (form.initial.get("reset_mode") or conf.RESET_MODE) if change else None
            obj.counting_since = counting_since_for(
                obj.reset_mode or conf.RESET_MODE, previous, obj.counting_since, timezone.now()
            )
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        instances = formset.save(commit=False)
        for instance in instances:
            if isinstance(instance, TenantLimitOverride) and instance.created_by_id is None:
                instance.created_by_id = request.user.pk
        for instance in formset.deleted_objects:
            instance.delete()
        for instance in instances:
            instance.save()
        formset.save_m2m()

    # -- actions

    def has_reset_usage_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.reset_usage")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST":
            requested = set(request.POST.getlist("action")) & set(self.guarded_actions)
            if requested - set(self.get_actions(request)):
                raise PermissionDenied
        extra_context = {
            **(extra_context or {}),
            "overview_url": reverse("admin:usage_limits_tenant_overview"),
        }
        return super().changelist_view(request, extra_context)

    @admin.action(description=_("Reset current usage"), permissions=["reset_usage"])
    def reset_current_usage(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> HttpResponse | None:
        form = ResetUsageForm(request.POST if "confirm" in request.POST else None)
        if form.is_bound and form.is_valid():
            self._reset(request, queryset, form.cleaned_data["feature"] or None, form)
            back_to = primary_key(request.POST.get("back_to_tenant", ""))
            if back_to is not None and queryset.filter(pk=back_to).exists():
                return HttpResponseRedirect(
                    reverse("admin:usage_limits_tenant_change", args=[back_to])
                )
            return None
        return self._reset_confirmation(request, queryset, form)

    def _reset_confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        form: ResetUsageForm,
        back_to_tenant: Tenant | None = None,
    ) -> TemplateResponse:
        tenants = list(queryset.select_related("plan").order_by("name")[:PREVIEW_TENANTS])
        return self._confirmation(
            request,
            queryset,
            "admin/usage_limits/tenant/reset_usage_confirmation.html",
            form,
            action="reset_current_usage",
            title=_("Reset current usage"),
            previews=[self._preview(tenant) for tenant in tenants],
            # From the tenant's own page the form posts to the changelist (where actions run)
            # and comes back to the tenant afterwards.
            form_url=reverse("admin:usage_limits_tenant_changelist") if back_to_tenant else "",
            back_to_tenant=back_to_tenant.pk if back_to_tenant else "",
        )

    def reset_usage_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        """The reset confirmation for one tenant, linked from its change page."""
        if not (self.has_view_permission(request) and self.has_reset_usage_permission(request)):
            raise PermissionDenied
        tenant = self.get_object(request, object_id)
        if tenant is None:
            raise Http404
        queryset = Tenant.objects.filter(pk=tenant.pk)
        return self._reset_confirmation(request, queryset, ResetUsageForm(), back_to_tenant=tenant)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_reset_usage": self.has_reset_usage_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _preview(self, tenant: Tenant) -> _TenantPreview:
        try:
            usage = get_usage(tenant)
        except UsageLimitsError as exc:
            return _TenantPreview(tenant, None, str(exc))
        metered = [f for f in usage.features if f.kind == FeatureKind.METERED]
        return _TenantPreview(tenant, dataclasses.replace(usage, features=metered))

    def _reset(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        feature: str | None,
        form: ResetUsageForm,
    ) -> None:
        reason = form.cleaned_data["reason"]
        counters = tenants = 0
        skipped: list[str] = []
        for tenant in queryset.order_by("pk"):
            try:
                with transaction.atomic():
                    results = reset_usage(
                        tenant,
                        feature,
                        by=request.user,  # type: ignore[arg-type]
                        reason=reason,
                        source=UsageReset.Source.ADMIN,
                    )
                    if results:
                        changes = "; ".join(
                            f"{r.feature} {r.period.key}: {r.value_before} -> 0" for r in results
                        )
                        self.log_change(
                            request, tenant, f"Reset usage ({changes}). Reason: {reason}"
                        )
            except UsageLimitsError as exc:
                skipped.append(f"{tenant}: {exc}")
                continue
            if results:
                counters += len(results)
                tenants += 1
        self.message_user(
            request,
            ngettext(
                "Reset %(counters)d counter of %(tenants)d tenant.",
                "Reset %(counters)d counters of %(tenants)d tenants.",
                counters,
            )
            % {"counters": counters, "tenants": tenants},
            messages.SUCCESS if counters else messages.WARNING,
        )
        if skipped:
            self.message_user(request, _("Skipped: %s") % " ".join(skipped), messages.WARNING)

    @admin.action(description=_("Change plan"), permissions=["change"])
    def change_plan(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> TemplateResponse | None:
        form = ChangePlanForm(request.POST if "confirm" in request.POST else None)
        if not (form.is_bound and form.is_valid()):
            return self._confirmation(
                request,
                queryset,
                "admin/usage_limits/tenant/change_plan_confirmation.html",
                form,
                action="change_plan",
                title=_("Change plan"),
                tenants=list(queryset.select_related("plan").order_by("name")[:PREVIEW_TENANTS]),
            )
        plan: Plan = form.cleaned_data["plan"]
        changed = unchanged = 0
        for tenant in queryset.select_related("plan").order_by("pk"):
            if tenant.plan_id == plan.pk:
                unchanged += 1
                continue
            previous = tenant.plan
            with transaction.atomic():
                tenant.plan = plan
                # save(), not QuerySet.update(): post_save drops the tenant's cached rules.
                tenant.save(update_fields=["plan", "updated_at"])
                self.log_change(request, tenant, f"Changed plan from {previous} to {plan}.")
            changed += 1
        message = ngettext(
            "Moved %(count)d tenant to %(plan)s.", "Moved %(count)d tenants to %(plan)s.", changed
        ) % {"count": changed, "plan": plan}
        if unchanged:
            message += " " + str(_("%(count)d already on it.") % {"count": unchanged})
        self.message_user(request, message, messages.SUCCESS)
        return None

    def _confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[Tenant],
        template: str,
        form: forms.Form,
        *,
        action: str,
        title: Any,
        **context: Any,
    ) -> TemplateResponse:
        # "Select all N" posts select_across instead of N ids; the confirmation passes it on
        # (with the changelist's filters, kept in the URL) rather than listing every id.
        select_across = request.POST.get("select_across") == "1"
        ids = queryset.values_list("pk", flat=True)
        count = queryset.count()
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.opts,
                "form": form,
                "action": action,
                "select_across": select_across,
                "selected_ids": list(ids[:1] if select_across else ids),
                "selected_count": count,
                "more": max(count - PREVIEW_TENANTS, 0),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media + form.media,
                **context,
            },
        )

    # -- the overview page

    def get_urls(self) -> list[URLPattern]:
        overview = path(
            "overview/",
            self.admin_site.admin_view(self.overview_view),
            name="usage_limits_tenant_overview",
        )
        reset = path(
            "<path:object_id>/reset-usage/",
            self.admin_site.admin_view(self.reset_usage_view),
            name="usage_limits_tenant_reset_usage",
        )
        return [overview, reset, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        over, over_total = over_limit(OVERVIEW_OVER_LIMIT, now)
        return TemplateResponse(
            request,
            "admin/usage_limits/overview.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Usage overview"),
                "opts": self.opts,
                "closest": closest_to_limits(OVERVIEW_PER_FEATURE, now),
                "per_feature": OVERVIEW_PER_FEATURE,
                "over": over,
                "over_total": over_total,
                "over_url": _changelist_url(UsageRecord, period="current", level="over"),
                "counts": status_counts(),
                "media": self.media,
            },
        )


admin.site.register(Tenant, TenantAdmin)


@admin.register(TenantLimitOverride)
class LimitOverrideAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = LimitOverrideForm
    list_display = ("tenant", "feature", "limit_display", "reason", "created_by", "updated_at")
    list_filter = ("feature",)
    list_select_related = ("tenant", "created_by")
    search_fields = ("tenant__name", "tenant__slug", "reason")
    autocomplete_fields = ("tenant",)
    readonly_fields = ("created_by", "created_at", "updated_at")

    @admin.display(description=_("limit"), ordering="limit")
    def limit_display(self, override: TenantLimitOverride) -> str:
        return describe_limit(override.limit)

    def save_model(
        self, request: HttpRequest, obj: TenantLimitOverride, form: Any, change: bool
    ) -> None:
        if obj.created_by_id is None:
            obj.created_by_id = request.user.pk
        super().save_model(request, obj, form, change)


# --- counters ----------------------------------------------------------------------------------


class PeriodFilter(admin.SimpleListFilter):
    title = _("period")
    parameter_name = "period"
    RECENT = 12

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        since = timezone.now() - timedelta(days=400)
        keys = (
            UsageRecord.objects.filter(period_start__gte=since, period_end__isnull=False)
            .order_by()
            .values_list("period_key", flat=True)
            .distinct()
        )
        recent = sorted(set(keys), reverse=True)[: self.RECENT]
        return [("current", _("Current")), ("closed", _("Closed"))] + [(k, k) for k in recent]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "current":
            return current_counters(queryset)
        if value == "closed":
            return queryset.filter(period_end__lte=timezone.now())
        if value:
            return queryset.filter(period_key=value)
        return queryset


class LevelListFilter(admin.SimpleListFilter):
    """Meter level, decided in the database (``used * 100 >= amber * limit``), never in Python."""

    title = _("level")
    parameter_name = "level"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (LevelFilter.AMBER.value, _("Amber and above")),
            (LevelFilter.RED.value, _("Red")),
            (LevelFilter.OVER.value, _("At or over the limit")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in {level.value for level in LevelFilter}:
            return at_level(queryset, str(value))
        return queryset


class FeatureFilter(admin.SimpleListFilter):
    title = _("feature")
    parameter_name = "feature"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(name, name) for name in feature_order(known_features())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(feature=value) if value else queryset


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "tenant",
        "feature",
        "period_key",
        "used",
        "limit_display",
        "percent_display",
        "level_display",
        "period_start",
        "period_end",
        "updated_at",
    )
    list_filter = (
        FeatureFilter,
        PeriodFilter,
        ("tenant__plan", admin.RelatedFieldListFilter),
        LevelListFilter,
    )
    list_select_related = ("tenant",)
    search_fields = ("tenant__name", "tenant__slug")
    show_full_result_count = False  # the count would repeat the limit subqueries once more

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageRecord]:
        return with_effective_limits(super().get_queryset(request))

    @admin.display(description=_("limit"), ordering="effective_limit")
    def limit_display(self, record: UsageRecord) -> str:
        if not record.in_plan:  # type: ignore[attr-defined]
            return str(_("not in plan"))
        return describe_limit(record.effective_limit)  # type: ignore[attr-defined]

    @admin.display(description=_("used %"), ordering="percent")
    def percent_display(self, record: UsageRecord) -> str:
        percent = record.percent  # type: ignore[attr-defined]
        return "-" if percent is None else f"{percent:.1f} %"

    @admin.display(description=_("level"))
    def level_display(self, record: UsageRecord) -> SafeString | str:
        limit = record.effective_limit  # type: ignore[attr-defined]
        if not record.in_plan or limit is None:  # type: ignore[attr-defined]
            return "-"
        level = usage_level(record.used, limit)
        return format_html('<span class="ul-level ul-level-{}">{}</span>', level, level)


@admin.register(UsageReset)
class UsageResetAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "tenant",
        "feature",
        "period_key",
        "value_before",
        "value_after",
        "source",
        "performed_by_display",
        "reason",
    )
    list_filter = ("source", "feature", "created_at")
    list_select_related = ("tenant",)
    search_fields = ("tenant__name", "tenant__slug", "performed_by_name", "reason")

    @admin.display(description=_("performed by"), ordering="performed_by_name")
    def performed_by_display(self, reset: UsageReset) -> str:
        return reset.performed_by_name or str(_("system"))


@admin.register(UsageAlert)
class UsageAlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "feature", "level_display", "period_start")
    list_filter = ("feature", "level")
    list_select_related = ("tenant",)
    search_fields = ("tenant__name", "tenant__slug")

    @admin.display(description=_("level"), ordering="level")
    def level_display(self, alert: UsageAlert) -> str:
        return str(_("exceeded")) if alert.level == UsageAlert.EXCEEDED else f"{alert.level} %"


__all__ = [
    "LimitOverrideAdmin",
    "PlanAdmin",
    "TenantAdmin",
    "UsageAlertAdmin",
    "UsageRecordAdmin",
    "UsageResetAdmin",
]

# The usage event ledger's admin (billing states, the retry action) lives with the billing code.
from usage_limits.billing import admin as billing_admin  # noqa: E402, F401


@admin.register(UsageOverview)
class UsageOverviewAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Puts "Usage overview" on the admin index; its list is the tenants' overview page."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Whoever may view tenants may view the overview (the proxy has no permissions of its own).
        return request.user.has_perm("usage_limits.view_tenant")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:usage_limits_tenant_overview"))
