"""The member run page lists a run's files; a viewer downloads one (issue 23). Screenshot at 1,280 px."""

import pytest
from django.test import Client

from accounts.models import Membership, Organization, Role, User
from workflows.models import Run, TriggerType
from workflows.services import workflow_create

from .test_builder import PASSWORD, fits, sign_in


@pytest.fixture(scope="module")
def storage_kind():
    return "local"  # the page is the same whatever the storage; both are tested in workflows/tests/test_files.py


def test_a_viewer_sees_the_run_s_files_and_downloads_one(page, live_server, shot, file_storage, transactional_db):
    org = Organization.objects.create(name="Acme", slug="acme")
    viewer = User.objects.create_user(email="viewer@acme.test", password=PASSWORD)
    Membership.objects.create(user=viewer, organization=org, role=Role.VIEWER)
    wf = workflow_create(organization=org, name="Orders upload", trigger_type=TriggerType.WEBHOOK)
    csv = b"id,name\n1,Ada\n2,Grace\n"
    answer = Client().post(
        f"/hooks/{wf.webhook_token}",
        {"note": "weekly", "upload": _file("orders <week 12>.csv", csv), "scan": _file("scan.pdf", b"%PDF-1.4" * 900)},
    )
    assert answer.status_code == 202, answer.content
    run = Run.objects.get(pk=answer.json()["run_id"])

    sign_in(page, live_server.url, "viewer@acme.test")
    page.goto(f"{live_server.url}/app/runs/{run.pk}/")
    files = page.locator("#pf-files")
    files.wait_for()
    assert files.locator("tr.pf-file").count() == 2
    link = files.get_by_role("link", name="orders <week 12>.csv")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "orders _week 12_.csv"  # Chromium makes < > safe for a disk
    assert open(download.value.path(), "rb").read() == csv  # noqa: SIM115 - closed by the test's fixture
    fits(page)
    shot(page, "run-files")


def _file(name, data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/octet-stream")
