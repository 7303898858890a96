"""Files kept outside the database (issue 23), on local disk and on S3 (a local moto server):
multipart webhook files streamed to storage within their limits, referenced from the run's
payload, listed by the API with signed expiring links, downloaded by members only, deleted
with their run (a kept replay keeps them), counted in potaflow_status and /metrics."""

import hashlib
import io
import json
import time
import uuid
from datetime import timedelta

import pytest
from django.core import signing
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from workflows.files import services as file_services
from workflows.models import FileState, Run, RunFile, RunStatus, TriggerType
from workflows.ops import retention
from workflows.services import run_replay, workflow_create

pytestmark = pytest.mark.django_db
BOUNDARY = "potaflow-test-boundary"


def multipart(fields: dict[str, str] | None = None, files: list[tuple[str, str, bytes, str]] = ()) -> bytes:
    """A multipart/form-data body written by hand, so a file name is sent exactly as given."""
    out = io.BytesIO()
    for name, value in (fields or {}).items():
        out.write(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data, content_type in files:
        out.write(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "surrogateescape")
        )
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def post(workflow, body: bytes, **headers):
    return Client().post(
        f"/hooks/{workflow.webhook_token}",
        data=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
        **headers,
    )


@pytest.fixture
def hook(org):
    return workflow_create(
        organization=org,
        name="Uploads",
        trigger_type=TriggerType.WEBHOOK,
        steps=[{"key": "parse", "action_type": "file.parse", "config": {"file": "{{ trigger.files.upload }}"}}],
    )


def test_an_uploaded_file_is_stored_and_the_run_payload_references_it(file_storage, hook):
    data = b"name,amount\nada,3\n" * 100
    response = post(hook, multipart({"note": "hi"}, [("upload", "orders.csv", data, "text/csv")]))
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    ref = run.payload["files"]["upload"]
    assert ref == {
        "name": "orders.csv",
        "size": len(data),
        "content_type": "text/csv",
        "sha256": hashlib.sha256(data).hexdigest(),
        "id": ref["id"],
    }
    assert run.payload["body"] == {"note": "hi"}
    row = RunFile.objects.get(pk=ref["id"])
    assert (row.run_id, row.state, row.organization_id) == (run.pk, FileState.READY, hook.organization_id)
    assert file_storage.objects() == {f"org-{hook.organization_id}/files/{row.pk}": data}


@pytest.mark.parametrize(
    "sent, shown",
    [("../../etc/passwd", "passwd"), ("a\x00b.csv", "ab.csv"), ("..", None), ("C:\\\\Windows\\\\win.ini", "win.ini")],
)
def test_a_hostile_file_name_is_only_shown_never_a_path(file_storage, hook, sent, shown):
    response = post(hook, multipart({}, [("upload", sent, b"root:x:0:0", "text/plain")]))
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    stored = file_storage.objects()
    if shown is None:  # Django's parser drops a part whose name is only dots: no file, nothing stored
        assert run.payload["files"] == {} and stored == {}
        return
    assert run.payload["files"]["upload"]["name"] == shown
    (key,) = stored
    assert key == f"org-{hook.organization_id}/files/{run.payload['files']['upload']['id']}"
    assert stored[key] == b"root:x:0:0"


@pytest.mark.parametrize(
    "setting, value, files, status, named",
    [
        ("POTAFLOW_UPLOAD_MAX_BYTES", 1000, [("a", "a.bin", b"x" * 10, ""), ("b", "b.bin", b"y" * 5000, "")], 413,
         "POTAFLOW_UPLOAD_MAX_BYTES"),
        ("POTAFLOW_UPLOAD_REQUEST_MAX_BYTES", 2000, [("a", "a.bin", b"x" * 3000, "")], 413,
         "POTAFLOW_UPLOAD_REQUEST_MAX_BYTES"),
        ("POTAFLOW_UPLOAD_MAX_FILES", 1, [("a", "a.bin", b"x", ""), ("b", "b.bin", b"y", "")], 400,
         "POTAFLOW_UPLOAD_MAX_FILES"),
        ("POTAFLOW_FILE_QUOTA_BYTES", 2000, [("a", "a.bin", b"x" * 2500, "")], 413, "POTAFLOW_FILE_QUOTA_BYTES"),
    ],
    ids=["per-file", "per-request", "file-count", "quota"],
)  # fmt: skip
def test_each_upload_limit_is_a_refusal_naming_it_and_nothing_is_kept(
    file_storage, hook, settings, setting, value, files, status, named
):
    setattr(settings, setting, value)
    response = post(hook, multipart({"note": "x"}, files))
    assert response.status_code == status, response.content
    assert named in response.json()["detail"]
    # The first file was complete before the second crossed the limit: it went too.
    assert file_storage.objects() == {}
    assert file_storage.open_multipart_uploads() == []
    assert not RunFile.objects.exists() and not Run.objects.exists()


def test_the_quota_counts_what_the_organization_already_keeps(file_storage, hook, settings):
    settings.POTAFLOW_FILE_QUOTA_BYTES = 4000
    assert post(hook, multipart({}, [("upload", "a.bin", b"x" * 1500, "")])).status_code == 202
    refused = post(hook, multipart({}, [("upload", "b.bin", b"y" * 2600, "")]))
    assert refused.status_code == 413 and "keeps 1500 bytes" in refused.json()["detail"]
    assert len(file_storage.objects()) == 1


def test_a_signed_workflow_verifies_the_whole_body_then_keeps_its_files(file_storage, org):
    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wf = workflow_create(organization=org, name="Signed", trigger_type=TriggerType.WEBHOOK, webhook_secret=secret)
    body = multipart({}, [("upload", "x.txt", b"signed bytes", "text/plain")])
    msg_id, now = "msg_1", timezone.now()
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    headers = {"HTTP_WEBHOOK_ID": msg_id, "HTTP_WEBHOOK_TIMESTAMP": str(int(now.timestamp()))}
    forged = post(wf, body, HTTP_WEBHOOK_SIGNATURE="v1,AAAA", **headers)
    assert forged.status_code == 401 and file_storage.objects() == {}
    response = post(wf, body, HTTP_WEBHOOK_SIGNATURE=signature, **headers)
    assert response.status_code == 202, response.content
    assert list(file_storage.objects().values()) == [b"signed bytes"]


def test_a_repeated_event_keeps_only_the_first_delivery_s_files(file_storage, hook):
    body = multipart({}, [("upload", "x.txt", b"once", "text/plain")])
    first = post(hook, body, HTTP_IDEMPOTENCY_KEY="evt-1")
    again = post(hook, body, HTTP_IDEMPOTENCY_KEY="evt-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert RunFile.objects.count() == 1 and len(file_storage.objects()) == 1


# -- people: the API's signed links, the member page ------------------------------
@pytest.fixture
def uploaded(file_storage, hook):
    response = post(hook, multipart({}, [("upload", "report <1>.csv", b"a,b\n1,2\n", "text/html")]))
    return Run.objects.get(pk=response.json()["run_id"])


def api_as(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_run_api_lists_files_with_a_signed_link_that_downloads_them(uploaded, viewer, outsider):
    detail = api_as(viewer).get(f"/api/runs/{uploaded.pk}/").json()
    (listed,) = detail["files"]
    assert listed["name"] == "report <1>.csv" and listed["size"] == 8 and listed["field"] == "upload"
    response = Client().get(listed["download_url"])
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"
    # Never rendered: the type the sender claimed (text/html) is not served back.
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert api_as(outsider).get(f"/api/runs/{uploaded.pk}/").status_code == 404


def test_an_expired_or_forged_link_is_refused(uploaded, viewer, monkeypatch):
    row = RunFile.objects.get()
    real = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real() - 3600)  # a link handed out an hour ago
    from workflows.files import links

    old = links.download_url(row)
    monkeypatch.setattr(signing.time, "time", real)
    expired = Client().get(old)
    assert expired.status_code == 410 and "POTAFLOW_FILE_LINK_SECONDS" in expired.json()["detail"]
    forged = links.download_url(row).replace(str(row.pk)[:8], str(uuid.uuid4())[:8])
    assert Client().get(forged).status_code == 404


def test_members_download_from_the_run_page_and_others_get_404(uploaded, viewer, outsider, other_org):
    row = RunFile.objects.get()
    url = f"/app/runs/{uploaded.pk}/files/{row.pk}/"
    page = Client()
    page.force_login(viewer)
    html = page.get(f"/app/runs/{uploaded.pk}/").content.decode()
    assert url in html and "report &lt;1&gt;.csv" in html
    response = page.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"a,b\n1,2\n"
    stranger = Client()
    stranger.force_login(outsider)
    assert stranger.get(url).status_code == 404
    # Another organization's file through one's own run is not found either.
    mine = workflow_create(organization=other_org, name="Mine", trigger_type=TriggerType.WEBHOOK)
    own = Run.objects.get(pk=post(mine, multipart({}, [("f", "x", b"x", "")])).json()["run_id"])
    assert stranger.get(f"/app/runs/{own.pk}/files/{row.pk}/").status_code == 404


# -- retention ---------------------------------------------------------------------
def _finish(run, days_ago):
    when = timezone.now() - timedelta(days=days_ago)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, created_at=when, finished_at=when)
    run.refresh_from_db()


def test_pruning_a_run_deletes_its_files_and_the_storage_figure_goes_down(file_storage, hook, settings):
    settings.POTAFLOW_RETAIN_FAILED_DAYS = 1
    old = Run.objects.get(pk=post(hook, multipart({}, [("upload", "a", b"x" * 300, "")])).json()["run_id"])
    kept = Run.objects.get(pk=post(hook, multipart({}, [("upload", "b", b"y" * 200, "")])).json()["run_id"])
    _finish(old, days_ago=3)
    assert file_services.usage() == (500, 2)
    report = retention.prune()
    assert report.files == 1 and not Run.objects.filter(pk=old.pk).exists()
    assert file_services.usage() == (200, 1)
    assert list(file_storage.objects().values()) == [b"y" * 200]
    assert RunFile.objects.get().run_id == kept.pk


def test_a_kept_replay_keeps_the_files_of_its_pruned_original(file_storage, hook, settings):
    settings.POTAFLOW_RETAIN_FAILED_DAYS = 1
    original = Run.objects.get(pk=post(hook, multipart({}, [("upload", "a", b"abc", "")])).json()["run_id"])
    _finish(original, days_ago=0)
    replay = run_replay(run=original)
    assert [f.pk for f in replay.files.all()] == [] and replay.payload["files"] == original.payload["files"]
    _finish(original, days_ago=3)
    retention.prune()
    assert not Run.objects.filter(pk=original.pk).exists()
    assert RunFile.objects.get().run_id == replay.pk
    assert list(file_storage.objects().values()) == [b"abc"]


def test_an_upload_abandoned_mid_write_is_deleted_by_the_pruner(file_storage, org, settings):
    row = file_services.start_file(organization_id=org.pk, origin="upload", name="half", content_type="")
    writer = file_services.Writer(row, limit=10_000, setting="POTAFLOW_UPLOAD_MAX_BYTES")
    writer.write(b"half written")
    if file_storage.kind == "local":
        writer.stream.flush()  # bytes on disk, as a killed process leaves them
    assert retention.prune().files == 0  # still within its grace: a slow upload is not killed
    RunFile.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert retention.prune().files == 1
    writer.stream = None  # the "dead" process never closes it
    assert file_storage.objects() == {} and file_storage.open_multipart_uploads() == []
    assert not RunFile.objects.exists()


def test_status_and_metrics_report_the_file_storage_used(file_storage, hook):
    post(hook, multipart({}, [("upload", "a", b"z" * 1234, "")]))
    out = io.StringIO()
    call_command("potaflow_status", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert (report["file_bytes"], report["file_count"]) == (1234, 1)
    assert file_storage.kind in report["file_storage"] or "s3://" in report["file_storage"]
    metrics = Client().get("/metrics").content.decode()
    assert "potaflow_file_storage_bytes 1234.0" in metrics


def test_an_export_never_contains_files(uploaded, editor):
    document = api_as(editor).get(f"/api/workflows/{uploaded.workflow_id}/export/").content
    assert str(RunFile.objects.get().pk).encode() not in document and b"a,b" not in document


# -- a raw body kept as a file (the workflow says so) ----------------------------------------
def test_a_binary_body_is_a_file_when_the_workflow_says_so(file_storage, org, settings):
    wf = workflow_create(organization=org, name="Scans", trigger_type=TriggerType.WEBHOOK, webhook_body_as_file=True)
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 50
    response = Client().post(f"/hooks/{wf.webhook_token}", data=pdf, content_type="application/pdf",
                             HTTP_CONTENT_DISPOSITION='attachment; filename="scan 1.pdf"')  # fmt: skip
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    ref = run.payload["files"]["body"]
    assert (ref["name"], ref["size"], ref["content_type"]) == ("scan 1.pdf", len(pdf), "application/pdf")
    assert ref["sha256"] == hashlib.sha256(pdf).hexdigest() and run.payload["body"] is None
    assert list(file_storage.objects().values()) == [pdf]
    # JSON and text stay bodies; over the file limit is refused and nothing is kept.
    as_json = Client().post(f"/hooks/{wf.webhook_token}", data=b'{"a": 1}', content_type="application/json")
    assert Run.objects.get(pk=as_json.json()["run_id"]).payload["body"] == {"a": 1}
    settings.POTAFLOW_UPLOAD_MAX_BYTES = 100
    refused = Client().post(f"/hooks/{wf.webhook_token}", data=pdf, content_type="application/pdf")
    assert refused.status_code == 413 and "POTAFLOW_UPLOAD_MAX_BYTES" in refused.json()["detail"]
    assert len(file_storage.objects()) == 1 and RunFile.objects.count() == 1


def test_without_the_setting_a_binary_body_stays_base64_and_nothing_is_stored(file_storage, hook):
    response = Client().post(f"/hooks/{hook.webhook_token}", data=b"\xff\xfe\x00", content_type="image/png")
    assert Run.objects.get(pk=response.json()["run_id"]).payload["body"] == {"base64": "//4A"}
    assert file_storage.objects() == {}


def test_the_body_as_file_switch_travels_in_an_export_and_files_never_do(file_storage, org, editor):
    wf = workflow_create(organization=org, name="Scans", trigger_type=TriggerType.WEBHOOK, webhook_body_as_file=True)
    document = api_as(editor).get(f"/api/workflows/{wf.pk}/export/").json()
    assert document["workflow"]["webhook_body_as_file"] is True
    imported = api_as(editor).post("/api/workflows/import/", document, format="json")
    assert imported.status_code == 201, imported.content
    assert imported.json()["webhook_body_as_file"] is True
    document["workflow"]["webhook_body_as_file"] = "yes"
    refused = api_as(editor).post("/api/workflows/import/", document, format="json")
    assert refused.status_code == 400 and "must be true or false" in refused.json()["detail"]
