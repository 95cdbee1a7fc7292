"""Admin for the billing ledger: see what reached Stripe, what failed and why, and retry it.

The ledger is a record of money: events are read-only here (no add, edit or delete). The one
action, *retry*, puts failed events back in the queue for the next reporter run.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from usage_limits.models import StripeWebhookEvent, UsageEvent

State = UsageEvent.ReportState


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = [
        "timestamp",
        "tenant",
        "feature",
        "quantity",
        "report_state",
        "attempts",
        "next_attempt_at",
        "reported_at",
        "error",
    ]
    list_filter = ["report_state", "feature", "accepted"]
    list_select_related = ["tenant"]
    search_fields = [
        "idempotency_key",
        "report_identifier",
        "tenant__name",
        "tenant__slug",
        "tenant__stripe_customer_id",
    ]
    date_hierarchy = "timestamp"
    ordering = ["-timestamp", "-id"]
    actions = ["retry_reporting"]

    @admin.display(description=_("last error"))
    def error(self, event: UsageEvent) -> str:
        return Truncator(event.last_error).chars(80)

    @admin.action(description=_("Retry sending to Stripe"), permissions=["change"])
    def retry_reporting(self, request: HttpRequest, queryset: QuerySet[UsageEvent]) -> None:
        """Queue failed (or waiting) events for the next run, together with their group.

        Events pre-aggregated into one meter event share an identifier and must be sent again
        together; events a reporter holds right now are left alone.
        """
        now = timezone.now()
        retryable = Q(report_state__in=[State.FAILED, State.PENDING]) & ~Q(
            claimed_by__gt="", next_attempt_at__gt=now
        )
        chosen = queryset.filter(retryable)
        groups = set(
            chosen.exclude(report_identifier="").values_list("report_identifier", flat=True)
        )
        events = UsageEvent.objects.filter(retryable).filter(
            Q(pk__in=chosen.values("pk")) | Q(report_identifier__in=groups)
        )
        retried = list(events.select_related("tenant"))
        UsageEvent.objects.filter(pk__in=[e.pk for e in retried]).update(
            report_state=State.PENDING, next_attempt_at=None, attempts=0, claimed_by=""
        )
        for event in retried:
            self.log_change(request, event, "Queued for Stripe reporting again.")
        selected = set(queryset.values_list("pk", flat=True))
        skipped = len(selected - {e.pk for e in retried})
        self.message_user(
            request,
            ngettext(
                "%(count)d event will be sent to Stripe on the next reporter run.",
                "%(count)d events will be sent to Stripe on the next reporter run.",
                len(retried),
            )
            % {"count": len(retried)},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d event was left alone: already sent, not billed, or being sent.",
                    "%(count)d events were left alone: already sent, not billed, or being sent.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )


@admin.register(StripeWebhookEvent)
class StripeWebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["created", "type", "event_id", "customer_id", "tenant", "outcome", "detail"]
    list_filter = ["outcome", "type", "livemode"]
    list_select_related = ["tenant"]
    search_fields = ["event_id", "customer_id", "tenant__name"]
    date_hierarchy = "created"
