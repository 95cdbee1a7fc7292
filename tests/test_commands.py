"""usage_limits_reset, usage_limits_reset_expired and usage_limits_export."""

from __future__ import annotations

import csv
import datetime as dt
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command

from usage_limits import consume, get_usage, increment_usage, set_usage
from usage_limits.models import Plan, ResetMode, Tenant, UsageReset
from usage_limits.signals import usage_reset
from usage_limits.testing.factories import (
    LimitOverrideFactory,
    TenantFactory,
    UserFactory,
    plan_with_limits,
)

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def used(tenant: Tenant, feature: str = "api_calls") -> int:
    return get_usage(tenant).feature(feature).used


@pytest.fixture
def two_tenants(free_plan: Plan) -> tuple[Tenant, Tenant]:
    acme = TenantFactory(plan=free_plan, slug="acme", name="Acme")
    globex = TenantFactory(plan=free_plan, slug="globex", name="Globex")
    for tenant, calls in ((acme, 5), (globex, 9)):
        for _ in range(calls):
            consume(tenant, "api_calls")
        set_usage(tenant, "projects", 2)
    return acme, globex


# --- usage_limits_reset ------------------------------------------------------------------------


def test_reset_one_tenant_by_slug_writes_an_audit_row(
    two_tenants: tuple[Tenant, Tenant], django_capture_on_commit_callbacks: Any
) -> None:
    acme, globex = two_tenants
    operator = UserFactory(username="ops")
    fired: list[dict[str, Any]] = []
    usage_reset.connect(lambda **kw: fired.append(kw), weak=False, dispatch_uid="cmd-test")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            out, _ = run(
                "usage_limits_reset", "--tenant", "acme", "--reason", "Goodwill", "--user", "ops"
            )
    finally:
        usage_reset.disconnect(dispatch_uid="cmd-test")
    assert "reset acme api_calls" in out
    assert "1 counter reset across 1 tenant." in out
    assert (used(acme), used(globex)) == (0, 9)
    assert used(acme, "projects") == 2  # allocations are levels, not reset by default
    audit = UsageReset.objects.get()
    assert (audit.tenant, audit.feature, audit.value_before, audit.value_after) == (
        acme,
        "api_calls",
        5,
        0,
    )
    assert (audit.reason, audit.source, audit.performed_by) == ("Goodwill", "command", operator)
    assert len(fired) == 1


def test_reset_by_id_and_a_named_feature(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = two_tenants
    run("usage_limits_reset", "--tenant", str(acme.pk), "--feature", "projects", "--reason", "x")
    assert (used(acme, "projects"), used(acme)) == (0, 5)


def test_reset_all(two_tenants: tuple[Tenant, Tenant]) -> None:
    out, _ = run("usage_limits_reset", "--all", "--reason", "New contract year", "--no-input")
    assert "2 counters reset across 2 tenants." in out
    assert [used(t) for t in two_tenants] == [0, 0]
    assert UsageReset.objects.count() == 2


def test_a_dry_run_lists_and_changes_nothing(two_tenants: tuple[Tenant, Tenant]) -> None:
    out, _ = run("usage_limits_reset", "--all", "--reason", "check", "--dry-run")
    assert "would reset acme api_calls" in out
    assert ": 5 -> 0" in out
    assert ": 9 -> 0" in out
    assert "Dry run: 2 counters would reset across 2 tenants." in out
    assert [used(t) for t in two_tenants] == [5, 9]
    assert not UsageReset.objects.exists()


def test_tenants_whose_plan_lacks_the_feature_are_skipped(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    plan_with_limits("NOCALLS", projects=1)
    TenantFactory(plan=Plan.objects.get(code="NOCALLS"), slug="tiny")
    out, err = run(
        "usage_limits_reset", "--all", "--feature", "api_calls", "--reason", "x", "--no-input"
    )
    assert "skipped tiny" in err
    assert "2 counters reset across 3 tenants, 1 skipped." in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "nobody", "--reason", "x"], "No tenant with the slug or id 'nobody'"),
        (["--all", "--reason", "  "], "--reason must say why"),
        (["--all", "--reason", "x", "--feature", "nope"], "Unknown feature 'nope'"),
        (["--all", "--reason", "x", "--user", "ghost"], "No user 'ghost'"),
    ],
)
def test_reset_refuses_bad_input(
    two_tenants: tuple[Tenant, Tenant], args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run("usage_limits_reset", *args)
    assert not UsageReset.objects.exists()


@pytest.mark.parametrize(("answer", "reset"), [("yes", True), ("no", False), ("", False)])
def test_reset_all_asks_first(
    two_tenants: tuple[Tenant, Tenant],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    reset: bool,
) -> None:
    asked: list[str] = []

    def fake_input(prompt: str) -> str:
        asked.append(prompt)
        return answer

    monkeypatch.setattr("builtins.input", fake_input)
    if reset:
        run("usage_limits_reset", "--all", "--reason", "Year end")
    else:
        with pytest.raises(CommandError, match="Reset cancelled"):
            run("usage_limits_reset", "--all", "--reason", "Year end")
    assert asked == [
        "This resets the current usage of all 2 tenants to zero.\n"
        "Type 'yes' to continue, or 'no' to cancel: "
    ]
    assert [used(t) for t in two_tenants] == ([0, 0] if reset else [5, 9])


def test_reset_requires_a_reason_and_a_target() -> None:
    with pytest.raises(CommandError, match="--reason"):
        run("usage_limits_reset", "--all")
    with pytest.raises(CommandError, match="one of the arguments --tenant --all is required"):
        run("usage_limits_reset", "--reason", "x")


# --- usage_limits_reset_expired ----------------------------------------------------------------


def test_reset_expired_command_reports_and_supports_dry_runs(free_plan: Plan) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 15, tzinfo=UTC), tick=False) as clock:
        tenant = TenantFactory(plan=free_plan, slug="sched", reset_mode=ResetMode.SCHEDULED)
        out, _ = run("usage_limits_reset_expired")
        assert "1 scheduled tenant checked, 0 moved" in out
        assert "1 pinned for the first time" in out
        consume(tenant, "api_calls")
        clock.move_to(dt.datetime(2026, 4, 1, 1, 0, tzinfo=UTC))
        out, _ = run("usage_limits_reset_expired", "--dry-run")
        assert "would close sched api_calls 2026-03 at 1" in out
        assert out.strip().endswith("skipped (changed by a concurrent run).")
        assert "Dry run: 1 scheduled tenant checked, 1 moved" in out
        assert not UsageReset.objects.exists()
        out, _ = run("usage_limits_reset_expired", "-v", "2")
        assert "closed sched api_calls 2026-03 at 1" in out
        assert UsageReset.objects.get().source == "scheduled"


# --- usage_limits_export -----------------------------------------------------------------------


@pytest.fixture
def known_usage() -> None:
    plan = plan_with_limits("FREE", api_calls=100, projects=3)
    with time_machine.travel(dt.datetime(2026, 2, 10, tzinfo=UTC), tick=False) as clock:
        acme = TenantFactory(plan=plan, slug="acme", name="Acme, Inc.")
        beta = TenantFactory(plan=plan, slug="beta", name="Beta")
        increment_usage(acme, "api_calls", 40)
        clock.move_to(dt.datetime(2026, 3, 5, tzinfo=UTC))
        increment_usage(acme, "api_calls", 7)
        set_usage(acme, "projects", 2)
        increment_usage(beta, "api_calls", 120)  # overage
        LimitOverrideFactory(tenant=beta, feature="api_calls", limit=-1)


EXPECTED_EXPORT = [
    [
        "tenant_id",
        "tenant_slug",
        "tenant_name",
        "plan",
        "feature",
        "period",
        "period_start",
        "period_end",
        "used",
        "limit",
    ],
    [
        "{acme}",
        "acme",
        "Acme, Inc.",
        "FREE",
        "api_calls",
        "2026-02",
        "2026-02-01T00:00:00+00:00",
        "2026-03-01T00:00:00+00:00",
        "40",
        "100",
    ],
    [
        "{acme}",
        "acme",
        "Acme, Inc.",
        "FREE",
        "api_calls",
        "2026-03",
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+00:00",
        "7",
        "100",
    ],
    [
        "{acme}",
        "acme",
        "Acme, Inc.",
        "FREE",
        "projects",
        "all",
        "1970-01-01T00:00:00+00:00",
        "",
        "2",
        "3",
    ],
    [
        "{beta}",
        "beta",
        "Beta",
        "FREE",
        "api_calls",
        "2026-03",
        "2026-03-01T00:00:00+00:00",
        "2026-04-01T00:00:00+00:00",
        "120",
        "-1",
    ],
]


def expected_rows() -> list[list[str]]:
    ids = {t.slug: str(t.pk) for t in Tenant.objects.all()}
    return [[cell.format(**ids) for cell in row] for row in EXPECTED_EXPORT]


def test_export_writes_one_csv_row_per_tenant_feature_and_period(known_usage: None) -> None:
    out, err = run("usage_limits_export")
    assert list(csv.reader(StringIO(out))) == expected_rows()
    assert err.startswith("Exported 4 rows (2 tenants, 2 features) to stdout in ")


def test_export_to_a_file_with_filters_and_progress(known_usage: None, tmp_path: Path) -> None:
    target = tmp_path / "usage.csv"
    out, err = run(
        "usage_limits_export", "--output", str(target), "--tenant", "acme", "--progress-every", "1"
    )
    rows = list(csv.reader(target.open(encoding="utf-8")))
    assert rows == expected_rows()[:4]
    assert out.startswith(f"Exported 3 rows (1 tenant, 2 features) to {target} in ")
    assert err.splitlines() == [
        "  1 of 3 rows (33%)",
        "  2 of 3 rows (66%)",
        "  3 of 3 rows (100%)",
    ]

    out, _ = run("usage_limits_export", "--feature", "api_calls", "--since", "2026-03-01")
    assert [row[1:6] for row in csv.reader(StringIO(out))][1:] == [
        ["acme", "Acme, Inc.", "FREE", "api_calls", "2026-03"],
        ["beta", "Beta", "FREE", "api_calls", "2026-03"],
    ]


def test_export_of_the_current_periods_only(known_usage: None) -> None:
    with time_machine.travel(dt.datetime(2026, 3, 20, tzinfo=UTC), tick=False):
        out, _ = run("usage_limits_export", "--current")
    assert [(row[1], row[4], row[5]) for row in csv.reader(StringIO(out))][1:] == [
        ("acme", "api_calls", "2026-03"),
        ("acme", "projects", "all"),
        ("beta", "api_calls", "2026-03"),
    ]


def test_export_of_an_unknown_tenant_is_an_error(known_usage: None) -> None:
    with pytest.raises(CommandError, match="No usage for the tenant 'nobody'"):
        run("usage_limits_export", "--tenant", "nobody")
