"""Listen for a test event: the next webhook (sent with curl, a real HTTP request) is captured as a sample,
not run, and its fields are offered by the data picker; a viewer sees why there is no URL."""

import json
import subprocess

from accounts.models import Membership, Organization, Role, User
from workflows import services
from workflows.models import Run, TriggerType, WorkflowSample

from .test_builder import PASSWORD, fits, keep, labelled, sign_in


def curl(url: str, body: dict, *extra: str) -> tuple[int, dict]:
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
         "-d", json.dumps(body), *extra, url],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    text, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(text or "null")


def test_listen_capture_a_curl_event_and_pick_its_fields(page, live_server, shot):
    base = live_server.url
    owner = User.objects.create_user(email="lea@example.com", password=PASSWORD)
    org = Organization.objects.create(name="Lea Co", slug="lea-co")
    Membership.objects.create(user=owner, organization=org, role=Role.OWNER)
    workflow = services.workflow_create(
        organization=org,
        name="Orders in",
        is_active=False,  # being built: not switched on yet
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {
                "key": "notify",
                "action_type": "http.request",
                "config": {"method": "POST", "url": "https://example.com/x"},
            }
        ],
    )
    sign_in(page, base, "lea@example.com")
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.wait_for_selector("#pf-builder[data-ready=true]")
    page.get_by_role("button", name="Listen for a test event").click()
    page.wait_for_selector("#pf-listen[data-listening=true]")
    hook = page.locator("#pf-webhook-url").input_value()
    assert hook.startswith(base + "/hooks/")

    event = {"order": {"id": "A-1001", "total": 129.5}, "customer": {"email": "ann@example.com"}}
    status, answer = curl(hook, event)
    assert (status, answer["captured"]) == (202, True)
    page.wait_for_selector("#pf-listen[data-captured]")
    assert json.loads(page.locator("#pf-sample").input_value()) == event
    assert Run.objects.filter(workflow=workflow).count() == 0  # captured, not run
    assert WorkflowSample.objects.get(workflow=workflow).payload["body"] == event

    # The captured fields are in the data picker.
    page.get_by_role("button", name="Form").click()
    url = page.locator(".pf-step").first.get_by_label("URL")
    url.fill("https://example.com/orders/")
    url.locator("xpath=ancestor::div[contains(@class,'pf-templated')][1]").get_by_role(
        "button", name="Insert data"
    ).click()
    page.locator(".pf-picker summary", has_text="order").click()  # nested fields start folded
    page.locator('.pf-picker button.pf-pick[data-path="trigger.body.order.id"]').click()
    assert url.input_value() == "https://example.com/orders/{{ trigger.body.order.id }}"
    fits(page)
    labelled(page)
    keep(shot(page, "listen-captured"), "listen-captured")

    # Listening is over: the inactive workflow's URL answers 404 again, and nothing ran.
    status, _ = curl(hook, event)
    assert status == 404
    assert Run.objects.filter(workflow=workflow).count() == 0

    # A viewer is told why the URL is not shown (not "appears once saved").
    viewer = User.objects.create_user(email="vic@example.com", password=PASSWORD)
    Membership.objects.create(user=viewer, organization=org, role=Role.VIEWER)
    page.context.clear_cookies()
    sign_in(page, base, "vic@example.com")
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.wait_for_selector("#pf-builder[data-ready=true]")
    assert "Only editors see the webhook URL" in page.locator("#pf-webhook-hidden").inner_text()
    assert page.locator("#pf-listen-button").count() == 0
