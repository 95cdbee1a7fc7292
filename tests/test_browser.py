"""The dashboard and the quota demo in a real browser: Debian's Chromium driven by Playwright.

Meters must *look* right, not only render: the computed colour of each bar is checked against the
stylesheet's ok / amber / red, in light and dark mode, and screenshots at 1280 px and 390 px are
saved under ``artifacts/`` for people to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from usage_limits.models import Tenant, UsageRecord

from .conftest import service_missing
from .example_site import REPO, load_demo_data, use_example_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The stylesheet's level colours, as getComputedStyle reports them.
LIGHT = {"ok": "rgb(26, 127, 55)", "amber": "rgb(180, 83, 9)", "red": "rgb(200, 30, 30)"}
DARK = {"ok": "rgb(63, 185, 80)", "amber": "rgb(227, 160, 8)", "red": "rgb(255, 107, 97)"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        service_missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install playwright)")
    # Playwright's sync API keeps an event loop running in this thread for as long as it lives;
    # the database work the tests and their fixtures do meanwhile is plain synchronous code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def site(browser: Browser, live_server: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # around it are plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    use_example_site(settings)
    load_demo_data()
    ARTIFACTS.mkdir(exist_ok=True)
    return str(live_server.url)


def sign_in(
    browser: Browser, site: str, username: str, *, width: int = 1280, **options: Any
) -> Page:
    context = browser.new_context(viewport={"width": width, "height": 900}, **options)
    page = context.new_page()
    page.goto(f"{site}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/")
    return page


def meter_state(page: Page, feature: str) -> dict[str, Any]:
    meter = page.locator(f'.ul-meter[data-feature="{feature}"]').first
    bar = meter.locator('[role="progressbar"]')
    return {
        "level": meter.get_attribute("data-level"),
        "colour": meter.locator(".ul-meter__fill").evaluate("el => getComputedStyle(el).fill"),
        "valuenow": bar.get_attribute("aria-valuenow"),
        "valuemin": bar.get_attribute("aria-valuemin"),
        "valuemax": bar.get_attribute("aria-valuemax"),
        "valuetext": bar.get_attribute("aria-valuetext"),
        "status": meter.locator(".ul-meter__status").all_inner_texts(),
    }


@pytest.mark.parametrize(
    ("username", "feature", "level", "percent", "text", "status"),
    [
        ("free", "api_calls", "ok", "30", "30 of 100 used (30%)", []),
        (
            "starter",
            "api_calls",
            "amber",
            "70",
            "700 of 1,000 used (70%). Nearing limit.",
            ["Nearing limit"],
        ),
        ("pro", "seats", "red", "95", "19 of 20 used (95%). Almost used up.", ["Almost used up"]),
    ],
)
def test_each_tenants_meter_has_its_levels_colour_and_values(
    browser: Browser,
    site: str,
    username: str,
    feature: str,
    level: str,
    percent: str,
    text: str,
    status: list[str],
) -> None:
    for width in (1280, 390):
        page = sign_in(browser, site, username, width=width)
        page.goto(f"{site}/usage/")
        assert meter_state(page, feature) == {
            "level": level,
            "colour": LIGHT[level],
            "valuenow": percent,
            "valuemin": "0",
            "valuemax": "100",
            "valuetext": text,
            "status": status,
        }
        # every other meter on the page agrees with its own level too
        for meter in page.locator('.ul-meter:has([role="progressbar"])').all():
            shown = meter.get_attribute("data-level")
            fill = meter.locator(".ul-meter__fill").evaluate("el => getComputedStyle(el).fill")
            assert fill == LIGHT[str(shown)]
        # nothing overflows the viewport sideways, on a phone as on a desktop
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width
        page.screenshot(path=ARTIFACTS / f"dashboard-{username}-{width}.png", full_page=True)
        page.context.close()


def test_dark_mode_keeps_the_levels_apart(browser: Browser, site: str) -> None:
    page = sign_in(browser, site, "starter", color_scheme="dark")
    page.goto(f"{site}/usage/")
    assert meter_state(page, "api_calls")["colour"] == DARK["amber"]
    card = page.locator('.ul-meter[data-feature="api_calls"]')
    assert card.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(22, 27, 34)"
    assert card.evaluate("el => getComputedStyle(el).color") == "rgb(230, 237, 243)"
    page.screenshot(path=ARTIFACTS / "dashboard-starter-dark-390.png", full_page=True)
    page.context.close()


def test_the_demo_button_fills_the_meter_until_the_limit_page(browser: Browser, site: str) -> None:
    page = sign_in(browser, site, "free", width=390)
    page.goto(f"{site}/demo/")
    seen = [meter_state(page, "api_calls")["level"]]
    button = page.get_by_role("button", name="Make 10 API calls")
    statuses = []
    for _ in range(10):
        with page.expect_response(lambda r: r.url.endswith("/demo/call/")) as answer:
            button.click()
        page.wait_for_load_state()
        statuses.append(answer.value.status)
        if answer.value.status == 429:
            break
        state = meter_state(page, "api_calls")
        assert state["colour"] == LIGHT[state["level"]]
        seen.append(state["level"])
    # 30 % -> 40, 50 (ok), 60, 70, 80 (amber), 90, 100 (red), then the quota is used up
    assert seen == ["ok", "ok", "ok", "amber", "amber", "amber", "red", "red"]
    assert statuses == [302] * 7 + [429]
    assert page.locator("h1").inner_text() == "Limit reached"
    assert page.get_by_role("link", name="Upgrade plan").get_attribute("href") == "/pricing/"
    page.screenshot(path=ARTIFACTS / "limit-reached-390.png", full_page=True)
    acme = Tenant.objects.get(slug="acme")
    assert UsageRecord.objects.get(tenant=acme, feature="api_calls").used == 100
    page.context.close()
