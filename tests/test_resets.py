"""The three reset modes across a period boundary, the reset job and its HTTP endpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import time_machine
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse

from tests.concurrency import run_in_threads
from usage_limits import consume, get_usage, reset_usage
from usage_limits.models import Plan, ResetMode, Tenant, UsageRecord, UsageReset
from usage_limits.resets import reset_expired, set_reset_mode
from usage_limits.responses import ratelimit_headers
from usage_limits.signals import usage_reset
from usage_limits.testing.factories import TenantFactory, UserFactory, plan_with_limits

pytestmark = pytest.mark.django_db

UTC = dt.UTC
MARCH_15 = dt.datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MARCH_31_LATE = dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)
APRIL_1 = dt.datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
APRIL_2 = dt.datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
KEY = "k" * 40


def usage(tenant: Tenant, feature: str = "api_calls") -> tuple[int, str | None]:
    item = get_usage(tenant).feature(feature)
    return item.used, None if item.period is None else item.period.key


def counting_since(tenant: Tenant) -> dt.datetime | None:
    return Tenant.objects.values_list("counting_since", flat=True).get(pk=tenant.pk)


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(MARCH_15, tick=False) as traveller:
        yield traveller


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    usage_reset.connect(receiver, dispatch_uid="test_resets")
    yield calls
    usage_reset.disconnect(dispatch_uid="test_resets")


def spend(tenant: Tenant, count: int, feature: str = "api_calls") -> None:
    for _ in range(count):
        assert consume(tenant, feature).allowed


# --- lazy ----------------------------------------------------------------------------------------


def test_lazy_mode_starts_the_new_period_at_zero_without_any_job(
    tenant: Tenant, clock: time_machine.Coordinates
) -> None:
    clock.move_to(MARCH_31_LATE)
    spend(tenant, 7)
    assert usage(tenant) == (7, "2026-03")
    clock.move_to(APRIL_1)
    assert usage(tenant) == (0, "2026-04")
    spend(tenant, 1)
    assert usage(tenant) == (1, "2026-04")
    # March is kept as history; no reset happened, so there is no audit row.
    assert UsageRecord.objects.get(tenant=tenant, period_key="2026-03").used == 7
    assert not UsageReset.objects.exists()


def test_the_job_leaves_lazy_and_manual_tenants_alone(
    free_plan: Plan, clock: time_machine.Coordinates
) -> None:
    lazy = TenantFactory(plan=free_plan)
    manual = TenantFactory(plan=free_plan, reset_mode=ResetMode.MANUAL)
    clock.move_to(APRIL_2)
    report = reset_expired()
    assert report.checked == 0
    assert counting_since(lazy) is None
    assert counting_since(manual) is None


# --- scheduled ---------------------------------------------------------------------------------


@pytest.fixture
def scheduled(free_plan: Plan, clock: time_machine.Coordinates) -> Tenant:
    tenant = TenantFactory(plan=free_plan, reset_mode=ResetMode.SCHEDULED)
    report = reset_expired()
    assert (report.checked, report.pinned, report.moved) == (1, 1, 0)
    assert counting_since(tenant) == dt.datetime(2026, 3, 1, tzinfo=UTC)
    return tenant


def test_a_denial_while_the_scheduled_reset_is_due_asks_for_a_short_wait(
    scheduled: Tenant, clock: time_machine.Coordinates, settings: Any
) -> None:
    assert consume(scheduled, "api_calls", 100).allowed
    clock.move_to(APRIL_2)  # March is over; the job has not run yet
    decision = consume(scheduled, "api_calls")
    assert not decision.allowed
    assert decision.period.key == "2026-03"
    headers = ratelimit_headers(decision)
    # Not 0 (the period's end is behind us): that would send clients straight back.
    assert headers["Retry-After"] == "60"
    assert headers["RateLimit"].endswith(";t=60")
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "OVERDUE_RETRY_AFTER": 300}
    assert ratelimit_headers(decision)["Retry-After"] == "300"


def test_scheduled_mode_keeps_counting_in_the_old_period_until_the_job_runs(
    scheduled: Tenant,
    clock: time_machine.Coordinates,
    received: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    spend(scheduled, 5)
    clock.move_to(APRIL_2)
    assert usage(scheduled) == (5, "2026-03")
    spend(scheduled, 1)
    assert usage(scheduled) == (6, "2026-03")

    with django_capture_on_commit_callbacks(execute=True):
        call_command("usage_limits_reset_expired", stdout=_Sink())

    assert usage(scheduled) == (0, "2026-04")
    assert counting_since(scheduled) == dt.datetime(2026, 4, 1, tzinfo=UTC)
    audit = UsageReset.objects.get()
    assert (audit.tenant_id, audit.feature, audit.period_key) == (
        scheduled.pk,
        "api_calls",
        "2026-03",
    )
    assert audit.period_start == dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert (audit.value_before, audit.value_after) == (6, 0)
    assert audit.source == UsageReset.Source.SCHEDULED
    assert audit.performed_by is None
    assert "2026-03 ended at 2026-04-01 00:00 UTC" in audit.reason
    assert [(c["feature"], c["value_before"], c["reset"].pk) for c in received] == [
        ("api_calls", 6, audit.pk)
    ]
    # The closed period stays as history.
    assert UsageRecord.objects.get(tenant=scheduled, period_key="2026-03").used == 6


def test_the_job_is_idempotent(scheduled: Tenant, clock: time_machine.Coordinates) -> None:
    spend(scheduled, 2)
    clock.move_to(APRIL_2)
    first = reset_expired()
    second = reset_expired()
    assert (first.moved, len(first.closed)) == (1, 1)
    assert (second.moved, len(second.closed), second.checked) == (0, 0, 1)
    assert UsageReset.objects.count() == 1


def test_a_dry_run_reports_and_changes_nothing(
    scheduled: Tenant, clock: time_machine.Coordinates
) -> None:
    spend(scheduled, 3)
    clock.move_to(APRIL_2)
    report = reset_expired(dry_run=True)
    assert [(c.feature, c.period.key, c.value_before, c.reset_id) for c in report.closed] == [
        ("api_calls", "2026-03", 3, None)
    ]
    assert counting_since(scheduled) == dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert not UsageReset.objects.exists()
    assert usage(scheduled) == (3, "2026-03")


def test_the_global_setting_puts_tenants_without_their_own_mode_on_schedule(
    free_plan: Plan, clock: time_machine.Coordinates
) -> None:
    inherits = TenantFactory(plan=free_plan)
    lazy = TenantFactory(plan=free_plan, reset_mode=ResetMode.LAZY)
    with override_settings(USAGE_LIMITS={"RESET_MODE": "scheduled"}):
        reset_expired()
        spend(inherits, 4)
        spend(lazy, 4)
        clock.move_to(APRIL_2)
        assert usage(inherits) == (4, "2026-03")
        assert usage(lazy) == (0, "2026-04")
        assert reset_expired().moved == 1
        assert usage(inherits) == (0, "2026-04")
    assert counting_since(lazy) is None


def test_features_with_different_periods_close_separately(clock: time_machine.Coordinates) -> None:
    plan = plan_with_limits("DAILY", api_calls=100)
    plan.limits.create(feature="exports", kind="metered", limit=10, period="daily")
    tenant = TenantFactory(plan=plan, reset_mode=ResetMode.SCHEDULED)
    reset_expired()
    assert counting_since(tenant) == dt.datetime(2026, 3, 15, tzinfo=UTC)  # the later start
    spend(tenant, 2, "api_calls")
    spend(tenant, 3, "exports")
    clock.move_to(dt.datetime(2026, 3, 16, 8, 0, tzinfo=UTC))
    assert usage(tenant, "exports") == (3, "2026-03-15")
    report = reset_expired()
    assert [(c.feature, c.period.key) for c in report.closed] == [("exports", "2026-03-15")]
    assert usage(tenant, "exports") == (0, "2026-03-16")
    assert usage(tenant, "api_calls") == (2, "2026-03")


def test_a_tenant_without_metered_features_is_left_alone(clock: time_machine.Coordinates) -> None:
    plan = plan_with_limits("SEATS", seats=3, projects=2)
    tenant = TenantFactory(plan=plan, reset_mode=ResetMode.SCHEDULED)
    report = reset_expired()
    assert (report.checked, report.pinned, report.moved) == (1, 0, 0)
    assert counting_since(tenant) is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_close_each_counter_exactly_once() -> None:
    with time_machine.travel(MARCH_15, tick=False) as clock:
        plan = plan_with_limits("FREE", api_calls=100)
        tenants = [TenantFactory(plan=plan, reset_mode=ResetMode.SCHEDULED) for _ in range(5)]
        reset_expired()
        for tenant in tenants:
            spend(tenant, 2)
        clock.move_to(APRIL_2)
        reports = run_in_threads(4, lambda _index: reset_expired())
    assert sum(r.moved for r in reports) == 5
    assert sum(len(r.closed) for r in reports) == 5
    assert UsageReset.objects.count() == 5
    assert sorted(UsageReset.objects.values_list("tenant_id", flat=True)) == sorted(
        t.pk for t in tenants
    )


# --- manual ------------------------------------------------------------------------------------


def test_manual_mode_keeps_counting_across_periods_until_an_operator_resets(
    free_plan: Plan, clock: time_machine.Coordinates
) -> None:
    since = dt.datetime(2026, 3, 10, tzinfo=UTC)
    tenant = TenantFactory(plan=free_plan, reset_mode=ResetMode.MANUAL, counting_since=since)
    spend(tenant, 5)
    clock.move_to(APRIL_2)
    assert usage(tenant) == (5, None)  # open-ended: no period, no reset date
    spend(tenant, 2)
    clock.move_to(dt.datetime(2026, 7, 1, tzinfo=UTC))
    reset_expired()
    assert usage(tenant) == (7, None)

    operator = UserFactory(username="ops")
    [result] = reset_usage(tenant, "api_calls", by=operator, reason="Contract renewed")
    assert result.value_before == 7
    assert result.period.start == since
    assert usage(tenant) == (0, None)
    audit = UsageReset.objects.get()
    assert (audit.performed_by, audit.reason, audit.value_before) == (
        operator,
        "Contract renewed",
        7,
    )


def test_manual_mode_without_a_start_counts_from_the_beginning(
    free_plan: Plan, clock: time_machine.Coordinates
) -> None:
    tenant = TenantFactory(plan=free_plan, reset_mode=ResetMode.MANUAL)
    spend(tenant, 3)
    clock.move_to(dt.datetime(2027, 1, 2, tzinfo=UTC))
    assert usage(tenant) == (3, None)
    record = UsageRecord.objects.get(tenant=tenant)
    assert (record.period_key, record.period_end) == ("since-19700101000000", None)


# --- the endpoint ------------------------------------------------------------------------------


@pytest.fixture
def expired(scheduled: Tenant, clock: time_machine.Coordinates) -> Tenant:
    spend(scheduled, 4)
    clock.move_to(APRIL_2)
    return scheduled


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("USAGE_LIMITS_RESET_API_KEY", KEY)
    return KEY


def post(headers: dict[str, str] | None = None) -> Any:
    # enforce_csrf_checks: the endpoint must work for a caller that has no CSRF cookie
    return Client(enforce_csrf_checks=True).post(
        reverse("usage_limits:reset_expired"), headers=headers or {}
    )


def assert_nothing_changed(tenant: Tenant) -> None:
    assert counting_since(tenant) == dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert not UsageReset.objects.exists()
    assert usage(tenant) == (4, "2026-03")


def test_the_endpoint_without_a_key_answers_401_and_changes_nothing(
    expired: Tenant, api_key: str
) -> None:
    response = post()
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="usage_limits"'
    assert "Authorization: Bearer" in response.json()["error"]
    assert_nothing_changed(expired)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {'x' * 40}"},
        {"X-Usage-Limits-Key": "k" * 39},
        {"Authorization": f"Bearer {KEY}x"},
    ],
)
def test_the_endpoint_with_a_wrong_key_answers_403_and_changes_nothing(
    expired: Tenant, api_key: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = post(headers)
    assert response.status_code == 403
    assert response.json() == {"error": "Wrong key."}
    assert_nothing_changed(expired)
    assert "POST /usage/reset-expired/ with a wrong key from 127.0.0.1" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"X-Usage-Limits-Key": KEY}]
)
def test_the_endpoint_with_the_right_key_moves_tenants_on(
    expired: Tenant, api_key: str, headers: dict[str, str]
) -> None:
    response = post(headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["checked"], body["moved"], body["closed"], body["dry_run"]) == (1, 1, 1, False)
    assert usage(expired) == (0, "2026-04")
    assert UsageReset.objects.get().value_before == 4


def test_the_endpoint_is_off_while_no_key_is_configured(
    expired: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USAGE_LIMITS_RESET_API_KEY", raising=False)
    response = post({"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert "USAGE_LIMITS_RESET_API_KEY" in response.json()["error"]
    assert_nothing_changed(expired)


def test_the_endpoint_reads_the_variable_the_setting_names(
    expired: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRON_KEY", KEY)
    with override_settings(USAGE_LIMITS={"RESET_API_KEY_ENV": "CRON_KEY"}):
        assert post({"X-Usage-Limits-Key": KEY}).status_code == 200
    assert usage(expired) == (0, "2026-04")


def test_the_endpoint_accepts_post_only(expired: Tenant, api_key: str) -> None:
    response = Client().get(
        reverse("usage_limits:reset_expired"), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 405
    assert_nothing_changed(expired)


# --- checks ------------------------------------------------------------------------------------


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages if m.id.startswith("usage_limits.")]


def test_a_malformed_key_variable_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with override_settings(USAGE_LIMITS={"RESET_API_KEY_ENV": "not a name"}):
        assert ids(run_checks(tags=["compatibility"])) == ["usage_limits.E040"]


def test_a_short_key_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_LIMITS_RESET_API_KEY", "short")
    assert ids(run_checks(tags=["compatibility"])) == ["usage_limits.W040"]
    monkeypatch.setenv("USAGE_LIMITS_RESET_API_KEY", KEY)
    assert ids(run_checks(tags=["compatibility"])) == []


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


# --- switching modes ---------------------------------------------------------------------------


def test_switching_to_scheduled_carries_the_current_counter_on(
    tenant: Tenant, clock: time_machine.Coordinates
) -> None:
    spend(tenant, 3)
    set_reset_mode(tenant, ResetMode.SCHEDULED)
    assert counting_since(tenant) == MARCH_15
    assert usage(tenant) == (3, "2026-03")
    clock.move_to(APRIL_2)
    assert usage(tenant) == (3, "2026-03")
    reset_expired()
    assert counting_since(tenant) == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert usage(tenant) == (0, "2026-04")


def test_switching_to_manual_starts_a_new_counter_and_back_to_lazy_follows_the_calendar(
    tenant: Tenant, clock: time_machine.Coordinates
) -> None:
    spend(tenant, 3)
    set_reset_mode(tenant, ResetMode.MANUAL)
    assert usage(tenant) == (0, None)
    spend(tenant, 2)
    clock.move_to(APRIL_2)
    assert usage(tenant) == (2, None)
    set_reset_mode(tenant, "")
    assert counting_since(tenant) is None
    assert usage(tenant) == (0, "2026-04")
    assert UsageRecord.objects.get(tenant=tenant, period_key="2026-03").used == 3


def test_an_unknown_mode_is_refused(tenant: Tenant) -> None:
    with pytest.raises(ValueError, match="Unknown reset mode 'weekly'"):
        set_reset_mode(tenant, "weekly")


def test_the_job_costs_one_update_per_moved_tenant_and_a_few_queries_per_chunk(
    free_plan: Plan, clock: time_machine.Coordinates
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_to_move(count: int) -> tuple[int, int]:
        UsageReset.objects.all().delete()
        Tenant.objects.all().delete()
        clock.move_to(MARCH_15)
        for _ in range(count):
            spend(TenantFactory(plan=free_plan, reset_mode=ResetMode.SCHEDULED), 1)
        reset_expired()  # pin
        clock.move_to(APRIL_2)
        with CaptureQueriesContext(connection) as moving:
            assert reset_expired().moved == count
        with CaptureQueriesContext(connection) as idle:
            assert reset_expired().moved == 0
        return len(moving), len(idle)

    queries_to_move(1)  # the plan's rules are cached from here on
    few_moving, few_idle = queries_to_move(2)
    many_moving, many_idle = queries_to_move(12)
    assert many_moving - few_moving == 10  # one conditional UPDATE per tenant, nothing else
    assert many_idle == few_idle
