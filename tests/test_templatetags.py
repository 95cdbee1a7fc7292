"""What each template tag renders, compared as HTML with the markup we mean to ship."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.template import Context, Template
from django.test import RequestFactory
from pytest_django import DjangoAssertNumQueries

from usage_limits import consume, set_usage
from usage_limits.exceptions import UnknownFeature
from usage_limits.models import Tenant
from usage_limits.testing.factories import TenantFactory, plan_with_limits
from usage_limits.testing.history import record_history

from .html import assert_contains_html, assert_html_equal

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _sunday_22_march_2026() -> Iterator[None]:
    with time_machine.travel(dt.datetime(2026, 3, 22, 12, tzinfo=dt.UTC), tick=False):
        yield


AMBER_ICON = (
    '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
    'focusable="false"><path d="M8 1.75 15 14.25H1z"/><path d="M8 6.25v3.5M8 11.75v.5"/></svg>'
)
RED_ICON = (
    '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
    'focusable="false"><circle cx="8" cy="8" r="6.5"/><path d="M8 4.5v4.25M8 10.75v.5"/></svg>'
)
INCLUDED_ICON = (
    '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
    'focusable="false"><path d="M3 8.5l3.25 3.25L13 5"/></svg>'
)
EXCLUDED_ICON = (
    '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
    'focusable="false"><path d="M4.5 4.5l7 7M11.5 4.5l-7 7"/></svg>'
)
UNLIMITED_ICON = (
    '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
    'focusable="false"><path d="M8 8c-1.5-2-2.5-3-4-3a3 3 0 0 0 0 6c1.5 0 2.5-1 4-3s2.5-3 '
    '4-3a3 3 0 0 1 0 6c-1.5 0-2.5-1-4-3z"/></svg>'
)


def render(source: str, **context: Any) -> str:
    return Template("{% load usage_limits %}" + source).render(Context(context))


@pytest.fixture
def acme(db: None) -> Tenant:
    plan = plan_with_limits(
        "STARTER", api_calls=1000, projects=None, seats=5, advanced_analytics=False
    )
    plan.name = "Starter"
    plan.save()
    tenant: Tenant = TenantFactory(plan=plan, name="Acme")
    consume(tenant, "api_calls", 700)
    set_usage(tenant, "seats", 5)
    return tenant


def api_calls_meter(tenant_id: int) -> str:
    mid = f"usage-meter-{tenant_id}-api_calls"
    return f"""
    <div class="ul-meter ul-meter--amber" id="{mid}" data-feature="api_calls" data-level="amber">
      <div class="ul-meter__head">
        <span class="ul-meter__label" id="{mid}-label">API calls</span>
        <span class="ul-meter__value">
          <span class="ul-meter__used">700</span> / <span class="ul-meter__limit">1,000</span>
        </span>
      </div>
      <div class="ul-meter__bar" role="progressbar" aria-labelledby="{mid}-label"
           aria-valuemin="0" aria-valuemax="100" aria-valuenow="70"
           aria-valuetext="700 of 1,000 used (70%). Nearing limit.">
        <svg class="ul-meter__track" viewBox="0 0 100 8" preserveAspectRatio="none"
             aria-hidden="true" focusable="false">
          <rect class="ul-meter__fill" width="70" height="8"/>
        </svg>
      </div>
      <div class="ul-meter__foot">
        <span class="ul-meter__percent">70%</span>
        <span class="ul-meter__status">{AMBER_ICON}Nearing limit</span>
        <span class="ul-meter__reset">Resets in 10 days</span>
      </div>
    </div>"""


def seats_meter(tenant_id: int) -> str:
    mid = f"usage-meter-{tenant_id}-seats"
    return f"""
    <div class="ul-meter ul-meter--red" id="{mid}" data-feature="seats" data-level="red">
      <div class="ul-meter__head">
        <span class="ul-meter__label" id="{mid}-label">Seats</span>
        <span class="ul-meter__value">
          <span class="ul-meter__used">5</span> / <span class="ul-meter__limit">5</span>
        </span>
      </div>
      <div class="ul-meter__bar" role="progressbar" aria-labelledby="{mid}-label"
           aria-valuemin="0" aria-valuemax="100" aria-valuenow="100"
           aria-valuetext="5 of 5 used (100%). Limit reached.">
        <svg class="ul-meter__track" viewBox="0 0 100 8" preserveAspectRatio="none"
             aria-hidden="true" focusable="false">
          <rect class="ul-meter__fill" width="100" height="8"/>
        </svg>
      </div>
      <div class="ul-meter__foot">
        <span class="ul-meter__percent">100%</span>
        <span class="ul-meter__status">{RED_ICON}Limit reached</span>
      </div>
    </div>"""


def projects_meter(tenant_id: int) -> str:
    mid = f"usage-meter-{tenant_id}-projects"
    return f"""
    <div class="ul-meter ul-meter--ok" id="{mid}" data-feature="projects" data-level="ok">
      <div class="ul-meter__head">
        <span class="ul-meter__label" id="{mid}-label">Projects</span>
        <span class="ul-meter__value"><span class="ul-meter__used">0</span></span>
      </div>
      <p class="ul-meter__unlimited">{UNLIMITED_ICON}Unlimited on your plan</p>
    </div>"""


def test_usage_meter(acme: Tenant) -> None:
    assert_html_equal(
        render('{% usage_meter tenant "api_calls" %}', tenant=acme), api_calls_meter(acme.pk)
    )
    assert_html_equal(render('{% usage_meter tenant "seats" %}', tenant=acme), seats_meter(acme.pk))
    assert_html_equal(
        render('{% usage_meter tenant "projects" %}', tenant=acme), projects_meter(acme.pk)
    )


def test_usage_meter_of_a_boolean_feature_says_included_or_not(acme: Tenant) -> None:
    assert_html_equal(
        render('{% usage_meter tenant "advanced_analytics" %}', tenant=acme),
        f"""<div class="ul-flag ul-flag--excluded" data-feature="advanced_analytics">
              <span class="ul-flag__label">Advanced analytics</span>
              <span class="ul-flag__status">{EXCLUDED_ICON}Not included</span>
            </div>""",
    )


def test_usage_meter_takes_a_tenant_id(acme: Tenant) -> None:
    assert_html_equal(
        render('{% usage_meter tenant_id "api_calls" %}', tenant_id=acme.pk),
        api_calls_meter(acme.pk),
    )


def test_a_feature_outside_the_plan_renders_nothing_and_a_typo_raises(db: None) -> None:
    tenant = TenantFactory(plan=plan_with_limits("SMALL", api_calls=10))
    assert render('{% usage_meter tenant "seats" %}', tenant=tenant).strip() == ""
    with pytest.raises(UnknownFeature):
        render('{% usage_meter tenant "api_cals" %}', tenant=tenant)


def test_many_meters_of_one_tenant_read_usage_once(
    acme: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    render('{% usage_meter tenant "api_calls" %}', tenant=acme)  # warm the rules
    with django_assert_num_queries(2):  # the rules version, the counters
        html = render(
            '{% usage_meter tenant "api_calls" %}{% usage_meter tenant "seats" %}'
            '{% usage_meter tenant "projects" %}',
            tenant=acme,
        )
    assert html.count('class="ul-meter ') == 3


def test_usage_dashboard(acme: Tenant, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "UPGRADE_URL": "/pricing/"}
    tid = acme.pk
    expected = f"""
    <section class="ul-dashboard" aria-labelledby="usage-dashboard-{tid}-title">
      <header class="ul-dashboard__header">
        <div>
          <p class="ul-dashboard__tenant">Acme</p>
          <h2 class="ul-dashboard__title" id="usage-dashboard-{tid}-title">Starter plan</h2>
          <p class="ul-dashboard__meta">
            <span class="ul-badge">Active</span>
            <span>Usage resets in 10 days
              (<time datetime="2026-04-01T00:00:00+00:00">1 April 2026</time>)</span>
          </p>
        </div>
      </header>
      <div class="ul-callout ul-callout--red" role="status">
        {RED_ICON}
        <p class="ul-callout__text"><strong>2 features are close to their limits.</strong>
          Upgrade your plan to keep going without interruption.</p>
        <a class="ul-button" href="/pricing/">{
        '<svg class="ul-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" '
        'focusable="false"><path d="M8 13.5v-11M3.5 7 8 2.5 12.5 7"/></svg>'
    }Upgrade plan</a>
      </div>
      <h3 class="ul-section-title">Usage this period</h3>
      <ul class="ul-grid" role="list"><li>{api_calls_meter(tid)}</li></ul>
      <h3 class="ul-section-title">Allocations</h3>
      <ul class="ul-grid" role="list"><li>{projects_meter(tid)}</li><li>{seats_meter(tid)}</li></ul>
      <h3 class="ul-section-title">Features</h3>
      <ul class="ul-flags" role="list"><li>
        <div class="ul-flag ul-flag--excluded" data-feature="advanced_analytics">
          <span class="ul-flag__label">Advanced analytics</span>
          <span class="ul-flag__status">{EXCLUDED_ICON}Not included</span>
        </div>
      </li></ul>
    </section>"""
    assert_html_equal(render("{% usage_dashboard tenant %}", tenant=acme), expected)


def test_a_dashboard_within_limits_offers_plans_without_an_alarm(db: None, settings: Any) -> None:
    settings.USAGE_LIMITS = {**settings.USAGE_LIMITS, "UPGRADE_URL": "/pricing/"}
    tenant = TenantFactory(plan=plan_with_limits("PRO", api_calls=1000, advanced_analytics=True))
    consume(tenant, "api_calls", 599)
    html = render("{% usage_dashboard tenant 3 %}", tenant=tenant)
    assert "ul-callout" not in html
    assert_contains_html(
        html, '<a class="ul-button ul-button--quiet" href="/pricing/">Compare plans</a>'
    )
    assert_contains_html(
        html,
        f"""<div class="ul-flag ul-flag--included" data-feature="advanced_analytics">
              <span class="ul-flag__label">Advanced analytics</span>
              <span class="ul-flag__status">{INCLUDED_ICON}Included</span>
            </div>""",
    )
    assert '<h3 class="ul-dashboard__title"' in html  # heading_level=3
    assert '<h4 class="ul-section-title">Usage this period</h4>' in html


def test_usage_history_chart(acme: Tenant) -> None:
    record_history(
        acme,
        "api_calls",
        {dt.date(2026, 3, 16): 300, dt.date(2026, 3, 20): 500, dt.date(2026, 3, 22): 300},
    )
    request = RequestFactory().get("/account/", {"tab": "usage"})
    html = render(
        '{% usage_history_chart tenant "api_calls" days=7 %}', tenant=acme, request=request
    )
    cid = f"usage-history-{acme.pk}-api_calls"
    # top of the scale: 1,100 (highest) x 1.1 -> 1.5K; a day's slot is 600 / 7 wide
    bar = '<rect class="ul-chart__bar ul-chart__bar--{}" x="{}" y="{}" width="64.29" height="{}">'
    expected = f"""
    <figure class="ul-chart" id="{cid}">
      <figcaption class="ul-chart__head">
        <span class="ul-chart__title">API calls, last 7 days</span>
        <nav class="ul-chart__ranges" aria-label="History range">
          <a class="ul-chart__range" href="?tab=usage&amp;days=7" aria-current="page">7 days</a>
          <a class="ul-chart__range" href="?tab=usage&amp;days=30">30 days</a>
          <a class="ul-chart__range" href="?tab=usage&amp;days=90">90 days</a>
        </nav>
      </figcaption>
      <div class="ul-chart__plot">
        <div class="ul-chart__axis" aria-hidden="true"><span>1.5K</span><span>0</span></div>
        <svg class="ul-chart__svg" viewBox="0 0 600 200" preserveAspectRatio="none" role="img"
             aria-labelledby="{cid}-title {cid}-desc" focusable="false">
          <title id="{cid}-title">API calls, last 7 days</title>
          <desc id="{cid}-desc">Running total of API calls within each period, day by day,
            over the last 7 days, from 16 March 2026 to 22 March 2026. The line marks the
            limit: 1,000 per month. Highest: 1,100 on 22 March.</desc>
          {bar.format("ok", "10.71", "160", "40")}<title>Mon 16 Mar: 300 of 1,000 used this period (300 that day)</title></rect>
          {bar.format("ok", "96.43", "160", "40")}<title>Tue 17 Mar: 300 of 1,000 used this period (0 that day)</title></rect>
          {bar.format("ok", "182.14", "160", "40")}<title>Wed 18 Mar: 300 of 1,000 used this period (0 that day)</title></rect>
          {bar.format("ok", "267.86", "160", "40")}<title>Thu 19 Mar: 300 of 1,000 used this period (0 that day)</title></rect>
          {bar.format("amber", "353.57", "93.33", "106.67")}<title>Fri 20 Mar: 800 of 1,000 used this period (500 that day)</title></rect>
          {bar.format("amber", "439.29", "93.33", "106.67")}<title>Sat 21 Mar: 800 of 1,000 used this period (0 that day)</title></rect>
          {bar.format("red", "525", "53.33", "146.67")}<title>Sun 22 Mar: 1,100 of 1,000 used this period (300 that day)</title></rect>
          <line class="ul-chart__baseline" x1="0" y1="200" x2="600" y2="200"
                vector-effect="non-scaling-stroke"/>
          <line class="ul-chart__limit" x1="0" y1="66.67" x2="600" y2="66.67"
                vector-effect="non-scaling-stroke"/>
        </svg>
      </div>
      <div class="ul-chart__dates" aria-hidden="true"><span>Mar 16</span><span>Mar 22</span></div>
      <p class="ul-chart__legend"><span class="ul-chart__key" aria-hidden="true"></span>Limit: 1,000 per month</p>
      <details class="ul-chart__data">
        <summary>Show the numbers</summary>
        <div class="ul-table-scroll">
          <table class="ul-table">
            <caption class="ul-visually-hidden">API calls, last 7 days</caption>
            <thead><tr><th scope="col">Day</th><th scope="col">Used that day</th>
              <th scope="col">Used in the period so far</th></tr></thead>
            <tbody>
              <tr><th scope="row"><time datetime="2026-03-22">Sun 22 Mar</time></th><td>300</td><td>1,100</td></tr>
              <tr><th scope="row"><time datetime="2026-03-21">Sat 21 Mar</time></th><td>0</td><td>800</td></tr>
              <tr><th scope="row"><time datetime="2026-03-20">Fri 20 Mar</time></th><td>500</td><td>800</td></tr>
              <tr><th scope="row"><time datetime="2026-03-19">Thu 19 Mar</time></th><td>0</td><td>300</td></tr>
              <tr><th scope="row"><time datetime="2026-03-18">Wed 18 Mar</time></th><td>0</td><td>300</td></tr>
              <tr><th scope="row"><time datetime="2026-03-17">Tue 17 Mar</time></th><td>0</td><td>300</td></tr>
              <tr><th scope="row"><time datetime="2026-03-16">Mon 16 Mar</time></th><td>300</td><td>300</td></tr>
            </tbody>
          </table>
        </div>
      </details>
    </figure>"""  # noqa: E501
    assert_html_equal(html, expected)


def test_the_query_string_switches_the_chart_range(acme: Tenant) -> None:
    request = RequestFactory().get("/", {"days": "90"})
    html = render(
        '{% usage_history_chart tenant "api_calls" days=7 %}', tenant=acme, request=request
    )
    assert "API calls, last 90 days" in html
    assert_contains_html(
        html, '<a class="ul-chart__range" href="?days=90" aria-current="page">90 days</a>'
    )
    # a range nobody offered falls back to the template's choice, without an error
    request = RequestFactory().get("/", {"days": "100000"})
    html = render(
        '{% usage_history_chart tenant "api_calls" days=7 %}', tenant=acme, request=request
    )
    assert "API calls, last 7 days" in html


def test_has_feature_tag_and_filter(acme: Tenant, db: None) -> None:
    source = (
        '{% has_feature tenant "seats" as seats %}{% has_feature tenant "advanced_analytics" '
        "as analytics %}{{ seats }} {{ analytics }} "
        '{% if tenant|has_feature:"seats" %}yes{% endif %}'
        '{% if tenant|has_feature:"advanced_analytics" %}no{% endif %}'
    )
    assert render(source, tenant=acme) == "True False yes"
    with pytest.raises(UnknownFeature):  # a typo is an error, not a feature nobody has
        render('{% has_feature tenant "advanced_analytic" as x %}', tenant=acme)


def test_without_a_tenant_the_tags_render_nothing() -> None:
    html = render(
        '{% usage_meter tenant "api_calls" %}{% usage_dashboard tenant %}'
        '{% usage_history_chart tenant "api_calls" %}'
        '{% has_feature tenant "seats" as seats %}{{ seats }}'
        '{% if tenant|has_feature:"seats" %}never{% endif %}',
        tenant=None,
    )
    assert html.strip() == "False"
