"""The example project's account page and quota demo, without a browser."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from usage_limits.models import Tenant, UsageRecord

from .example_site import load_demo_data, use_example_site

pytestmark = pytest.mark.django_db


@pytest.fixture
def free(settings: Any) -> Client:
    use_example_site(settings)
    load_demo_data()
    client = Client()
    assert client.login(username="free", password="free")
    return client


def test_the_account_page_embeds_the_dashboard_and_the_chart(free: Client) -> None:
    html = free.get("/account/").content.decode()
    assert 'class="ul-dashboard"' in html
    assert "API calls, last 30 days" in html
    assert "Advanced analytics comes with the Pro plan." in html


def test_the_demo_endpoint_counts_until_the_limit_then_answers_429(free: Client) -> None:
    acme = Tenant.objects.get(slug="acme")
    for _ in range(7):  # 30 -> 100 in steps of 10
        response = free.post("/demo/call/", {"quantity": "10"})
        assert response.status_code == 302
    response = free.post("/demo/call/", {"quantity": "10"})
    assert response.status_code == 429
    assert b'<h1 class="ul-page-title">Limit reached</h1>' in response.content
    assert response["RateLimit"].endswith(";r=0;t=" + response["Retry-After"])
    assert UsageRecord.objects.get(tenant=acme, feature="api_calls").used == 100
    # a single call still fits nowhere; the page offers the upgrade
    response = free.post("/demo/call/", {"quantity": "1"})
    assert response.status_code == 429
    assert b'href="/pricing/"' in response.content


def test_the_demo_refuses_get_and_odd_quantities(free: Client) -> None:
    assert free.get("/demo/call/").status_code == 405
    free.post("/demo/call/", {"quantity": "1000"})  # treated as 1
    acme = Tenant.objects.get(slug="acme")
    assert UsageRecord.objects.get(tenant=acme, feature="api_calls").used == 31


def test_the_upgrade_button_leads_to_the_plans(free: Client) -> None:
    html = free.get("/usage/").content.decode()
    assert '<a class="ul-button" href="/pricing/">' in html  # the free seat is used up: red
    html = free.get("/pricing/").content.decode()
    assert 'Free <span class="badge yes">Your plan</span>' in html
    assert "1\u00a0GB" in html
    assert "100 / month" in html


def test_the_example_site_serves_the_api_and_its_browsable_schema(free: Client) -> None:
    usage = free.get("/api/usage/", HTTP_ACCEPT="application/json")
    assert usage.status_code == 200
    assert usage.json()["data"]["plan"] == "FREE"
    swagger = free.get("/api/schema/swagger/")
    assert swagger.status_code == 200
    assert "swagger-ui" in swagger.content.decode()
    assert free.get("/api/schema/").status_code == 200
