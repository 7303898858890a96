"""The Insights page in a real browser after a scripted day of runs executed by the real worker:
the cards, both charts and their table views agree with GET /api/insights/; keyboard and axe-core clean."""

import shutil
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Membership, Organization, Role, User
from workflows.tests.test_insights import _scripted_day

from .a11y import serious_violations

DOCS = Path(__file__).resolve().parents[3] / "docs"
PASSWORD = "insights-pass-123!"


def sign_in(page, base: str, email: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/app/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/app/workflows/**")


@pytest.fixture
def member(transactional_db):
    org = Organization.objects.create(name="Analytical Engines", slug="engines")
    user = User.objects.create_user(email="vic@engines.test", password=PASSWORD)
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return org, user


def test_insights_after_a_scripted_day(celery_worker, live_server, page, member, shot):
    org, _ = member
    ok, _broken, runs = _scripted_day(org, timezone.now())
    base = live_server.url
    sign_in(page, base, "vic@engines.test")
    page.get_by_role("link", name="Insights").click()
    page.wait_for_selector('#pf-insights-cards[data-charts="ready"]')
    api = page.evaluate("fetch('/api/insights/?window=24h').then(r => r.json())")
    figures = {
        li.get_attribute("data-figure"): li.locator(".pf-figure-value").inner_text()
        for li in page.locator(".pf-figure").all()
    }
    assert figures["runs"] == str(api["totals"]["runs"]) == str(len(runs))
    assert figures["dead-letters"] == str(api["totals"]["dead_lettered"])
    assert figures["failure-rate"] == f"{api['failure_rate'] * 100:.1f} %"
    assert (
        page.locator("#pf-chart-runs canvas").count() == 1 and page.locator("#pf-chart-durations canvas").count() == 1
    )
    path = shot(page, "insights")
    shutil.copyfile(path, DOCS / "insights.png")
    # The table view holds the chart's numbers, hour by hour.
    page.get_by_text("Table view").first.click()
    rows = page.locator("#pf-table-runs tbody tr")
    assert rows.count() == 24
    shown = sum(int(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(24))
    assert shown == api["totals"]["failed"] == 4
    failing = page.locator("#pf-failing-steps tr[data-step=push]")
    assert "boom: the remote said no" in failing.inner_text() and "Sync" in failing.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert serious_violations(page) == []

    # One workflow, the 7-day window: by the day, from the same rollups; reachable by keyboard.
    page.get_by_label("Show").select_option(str(ok.pk))
    page.get_by_role("button", name="Show").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('#pf-insights-cards[data-charts="ready"]')
    page.get_by_role("link", name="Last 7d").click()
    page.wait_for_selector('#pf-insights-cards[data-charts="ready"]')
    assert page.locator(".pf-figure[data-figure=runs] .pf-figure-value").inner_text() == "10"
    assert page.locator("#pf-table-runs tbody tr").count() == 7
    assert "No step failed" in page.locator("#pf-failing-steps").inner_text()
    assert serious_violations(page) == []
