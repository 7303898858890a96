"""Start from something: use a template that needs nothing (it asks for its destination, then opens
the builder); then duplicate, export, import (file upload) and delete, with the runs' retention stated."""

import json

from accounts.models import Membership, Organization, Role, User
from workflows import services
from workflows.models import Workflow

from .test_builder import PASSWORD, fits, keep, labelled, sign_in


def test_use_a_template_then_duplicate_export_import_and_delete(page, live_server, shot, tmp_path):
    base = live_server.url
    user = User.objects.create_user(email="tom@example.com", password=PASSWORD)
    org = Organization.objects.create(name="Tom Co", slug="tom-co")
    Membership.objects.create(user=user, organization=org, role=Role.EDITOR)
    sign_in(page, base, "tom@example.com")
    page.locator("#pf-from-template").click()
    page.wait_for_selector("#pf-gallery")
    card = page.locator('[data-template="webhook-filter-forward"]')
    assert "Needs: nothing else" in card.inner_text()
    assert "Needs: a Slack connection" in page.locator('[data-template="webhook-slack"]').inner_text()
    fits(page)
    keep(shot(page, "template-gallery"), "template-gallery")

    card.get_by_role("link", name="Use the template Webhook → filter → HTTP forward").click()
    page.get_by_label("Name of the new workflow").fill("Large orders to the echo server")
    page.get_by_label("Where to forward the events (URL)").fill("http://127.0.0.1:9999/orders")
    labelled(page)
    page.get_by_role("button", name="Create and open the builder").click()
    page.wait_for_selector("#pf-builder[data-ready=true]")
    workflow = Workflow.objects.get(name="Large orders to the echo server")
    assert not workflow.is_active and page.url.endswith(f"/app/workflows/{workflow.pk}/")
    assert workflow.steps.get(key="forward").config["url"] == "http://127.0.0.1:9999/orders"
    assert "created from the template" in page.locator(".pf-messages").inner_text()

    # Export: a file download of the export document.
    with page.expect_download() as download:
        page.get_by_role("link", name="Export (JSON)").click()
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    assert exported.name == "large-orders-to-the-echo-server.potaflow.json"
    assert json.loads(exported.read_text())["potaflow_export"] == 2

    # Duplicate: a copy, switched off, opened in the builder.
    page.get_by_role("button", name="Duplicate workflow").click()
    page.wait_for_selector("#pf-builder[data-ready=true]")
    assert page.get_by_label("Workflow name").input_value() == "Copy of Large orders to the echo server"

    # Import the exported file back (a file upload on the workflow list).
    page.get_by_role("link", name="Workflows", exact=True).click()
    page.get_by_text("Import a workflow from an export file").click()
    page.get_by_label("Export file (.json)").set_input_files(str(exported))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_selector("#pf-builder[data-ready=true]")
    assert "Imported “Large orders to the echo server”" in page.locator(".pf-messages").inner_text()
    assert Workflow.objects.filter(name="Large orders to the echo server").count() == 2
    # A file that is not an export is refused, saying why.
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    page.get_by_role("link", name="Workflows", exact=True).click()
    page.get_by_text("Import a workflow from an export file").click()
    page.get_by_label("Export file (.json)").set_input_files(str(bad))
    page.get_by_role("button", name="Import", exact=True).click()
    assert "was not imported: potaflow_export" in page.locator(".pf-messages").inner_text()

    # The live view of one of its runs is a member page: the member layout, member links only.
    run = services.start_manual_run(workflow=workflow, body={"amount": 150})
    page.goto(f"{base}/runs/{run.pk}/live")  # the old address sends members to theirs
    page.wait_for_url(f"{base}/app/runs/{run.pk}/live/")
    assert page.locator(".pf-top nav").is_visible() and page.locator('a[href^="/admin/"]').count() == 0
    assert page.locator("#pf-step-0").get_attribute("data-key") == "only_large"
    fits(page)
    keep(shot(page, "live-view-member"), "live-view-member")

    # Delete, after a page that says what goes and how long runs are kept otherwise.
    page.goto(f"{base}/app/workflows/{workflow.pk}/")
    page.get_by_role("link", name="Delete workflow…").click()
    text = page.locator("#pf-delete").inner_text()
    assert "its 1 run " in text and "succeeded after 7 days" in text and "failed after 30 days" in text
    fits(page)
    shot(page, "workflow-delete")
    page.get_by_role("button", name="Delete the workflow and its runs").click()
    page.wait_for_url(f"{base}/app/workflows/**")
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    assert page.request.get(f"{base}/favicon.ico").ok  # not a 404 any more
