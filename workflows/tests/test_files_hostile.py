"""Hostile uploads and links (issue 23 review): what a sender can do to the real web server
(gunicorn as the Procfile starts it, raw sockets) and to a file's link, with nothing half-written or
over the quota after.

The web server's front (``potaflow.web_worker.BufferingWorker``, issue 18) receives every request
whole before the application sees it, so these tests observe the application through the front:
where it must be caught mid-request, the test holds the database lock the application waits on next
(the organization's quota lock, the workflow's row), never a sleep.

- concurrent uploads that each fit the organization's quota cannot together exceed it, nor can a
  chunked body (no Content-Length to check at the start);
- a body that stops before its Content-Length, or trickles past its deadline, is refused and keeps
  nothing (it was accepted as a run whose file had silently vanished, or held a thread forever);
- the bodies the front holds at once are bounded (``POTAFLOW_WEB_SPOOL_MAX_BYTES``): the disk it
  can be made to fill;
- the pruner never takes a file whose request is still being handled;
- access logs never hold a download link's signature; a link dies with its organization.
"""

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.test import Client

from accounts.models import Organization
from testing.web import start_web
from testing.worker import wait_for
from workflows.files import links
from workflows.files import services as file_services
from workflows.models import FileState, Run, RunFile, RunTrigger, TriggerType, Workflow
from workflows.ops import retention
from workflows.services import run_accept, workflow_create

BOUNDARY = "b0undary"
QUOTA = 1_000_000
DEADLINE = 3  # seconds, POTAFLOW_UPLOAD_BODY_TIMEOUT and POTAFLOW_WEB_BODY_TIMEOUT of the web server below
SPOOL = 1_500_000  # POTAFLOW_WEB_SPOOL_MAX_BYTES of the web server below
RESERVED = "(reserved for an upload)"  # the row of a request's Content-Length reservation (services.reserve_pool)


def part(field: str, filename: str, data: bytes = b"") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data


def closed(body: bytes) -> bytes:
    return body + f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(token: str, length: int | None = None, extra: str = "") -> bytes:
    sized = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /hooks/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{sized}\r\n\r\n"
    ).encode()


def raw_answer(sock: socket.socket) -> tuple[int, bytes, bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def answer(sock: socket.socket) -> tuple[int, bytes]:
    status, _, body = raw_answer(sock)
    return status, body


def hold_quota_lock(organization_id: int) -> None:
    """Inside a transaction: the organization's quota decisions (services._lock_quota) wait until it ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [file_services._QUOTA_LOCK, organization_id])


class _RolledBack(Exception):  # noqa: N818 - a control-flow signal of the test, not an error
    pass


@contextlib.contextmanager
def idempotency_key_held(workflow: Workflow, key: str) -> Iterator[None]:
    """Meanwhile a request with ``Idempotency-Key: key`` has its files written, then its run's INSERT waits on
    this uncommitted run with the same key; rolled back at the end, so the request's goes on."""
    with contextlib.suppress(_RolledBack), transaction.atomic():
        run_accept(workflow=workflow, trigger=RunTrigger.WEBHOOK, payload={}, idempotency_key=key)
        yield
        raise _RolledBack


def nothing_kept(file_storage) -> bool:
    return not RunFile.objects.exists() and file_storage.objects() == {} and not Run.objects.exists()


# -- the real web server -----------------------------------------------------------
@pytest.fixture(scope="module")
def web(file_storage_env):
    # Bodies over 64 KiB stream to storage as they arrive (smaller ones are read whole by the body deadline).
    server = start_web({
        **file_storage_env,
        "POTAFLOW_MAX_BODY_BYTES": "65536",
        "POTAFLOW_WEBHOOK_MAX_BYTES": "65536",
        "POTAFLOW_FILE_QUOTA_BYTES": str(QUOTA),
        "POTAFLOW_UPLOAD_BODY_TIMEOUT": str(DEADLINE),
        "POTAFLOW_WEB_BODY_TIMEOUT": str(DEADLINE),
        "POTAFLOW_WEB_SPOOL_MAX_BYTES": str(SPOOL),
    })  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def hook(org, transactional_db):
    return workflow_create(organization=org, name="Uploads", trigger_type=TriggerType.WEBHOOK)


def connect(web) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=DEADLINE + 20)


@pytest.mark.slow
@pytest.mark.services  # holds the quota's PostgreSQL advisory lock to line the four decisions up
def test_concurrent_uploads_cannot_together_exceed_the_quota(file_storage, web, hook):
    body = closed(part("upload", "a.bin", b"x" * 300_000))  # 3 fit the quota, 4 do not
    socks = [connect(web) for _ in range(4)]
    with transaction.atomic():
        hold_quota_lock(hook.organization_id)  # the four quota decisions wait here: all four at once
        for sock in socks:  # each sent whole: the front hands it to a thread of its own
            sock.sendall(request_head(hook.webhook_token, len(body)) + body)
        wait_for(lambda: RunFile.objects.filter(name=RESERVED).count() == 4,
                 message="four requests in the application, each reserving its Content-Length")  # fmt: skip
        assert not RunFile.objects.filter(name="a.bin").exists()  # nothing written before the quota said yes
    answers = [answer(sock) for sock in socks]
    for sock in socks:
        sock.close()
    statuses = sorted(status for status, _ in answers)
    # Each request reserved its Content-Length in turn: three fit, the fourth was refused whole.
    assert statuses == [202, 202, 202, 413], answers
    assert b"POTAFLOW_FILE_QUOTA_BYTES" in next(body for status, body in answers if status == 413)
    assert file_services.used_bytes(hook.organization_id) == 900_000 <= QUOTA
    assert RunFile.objects.filter(state=FileState.READY, run__isnull=False).count() == 3 == RunFile.objects.count()
    assert len(file_storage.objects()) == 3 and file_storage.open_multipart_uploads() == []


@pytest.mark.slow
def test_a_chunked_upload_counts_against_the_quota_as_it_arrives(file_storage, web, hook):
    file_services.write_file(organization_id=hook.organization_id, origin="step", name="kept", content_type="",
                             chunks=[b"k" * 990_000], limit=QUOTA, setting="POTAFLOW_UPLOAD_MAX_BYTES")  # fmt: skip
    body = closed(part("upload", "a.bin", b"z" * 50_000))  # no Content-Length: nothing to check at the start
    with connect(web) as sock:
        sock.sendall(request_head(hook.webhook_token) + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        status, detail = answer(sock)
    assert status == 413 and b"POTAFLOW_FILE_QUOTA_BYTES" in detail
    assert file_services.used_bytes(hook.organization_id) == 990_000
    assert len(file_storage.objects()) == 1 and not Run.objects.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
def test_a_body_that_ends_before_its_content_length_keeps_nothing(file_storage, web, hook, sized):
    # The client promised more, then closed its sending side (it still reads). The front answers for the
    # application, which never sees a cut request: nothing is written, not even for a moment. (Before the
    # front, the application read it and named the file it ended in; the front names the bytes that came.)
    body = part("upload", "half.bin", b"y" * 200_000)
    with connect(web) as sock:
        if sized:
            sock.sendall(request_head(hook.webhook_token, len(body) + 100_000) + body)
        else:
            sock.sendall(request_head(hook.webhook_token) + f"{len(body) + 5:x}\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        status, detail = answer(sock)
    assert status == 400, detail
    if sized:
        assert f"after {len(body)} of the {len(body) + 100_000} bytes its Content-Length declared".encode() in detail
    else:
        assert b"before the last chunk of its chunked body" in detail
    assert b"nothing was kept" in detail
    assert nothing_kept(file_storage) and file_storage.open_multipart_uploads() == []


@pytest.mark.slow
@pytest.mark.parametrize("sized", [True, False], ids=["streamed-upload", "chunked"])
def test_a_trickled_body_is_cut_at_its_deadline_and_keeps_nothing(file_storage, web, hook, sized):
    body = part("upload", "slow.bin", b"s" * (100_000 if sized else 30_000))  # chunked: within the webhook limit
    with connect(web) as sock:
        if sized:
            sock.sendall(request_head(hook.webhook_token, len(body) + 200_000) + body)
        else:
            sock.sendall(request_head(hook.webhook_token) + f"{len(body) + 5:x}\r\n".encode() + body)
        started = time.monotonic()
        status, detail = answer(sock)  # the rest never comes (the socket's timeout is the deadline + 20 s)
    setting = b"POTAFLOW_UPLOAD_BODY_TIMEOUT" if sized else b"POTAFLOW_WEB_BODY_TIMEOUT"
    assert status == 408 and setting in detail, detail
    assert time.monotonic() - started < DEADLINE + 15
    assert wait_for(lambda: nothing_kept(file_storage), timeout=10, message="nothing kept")


@pytest.mark.slow
def test_the_bodies_the_front_holds_at_once_are_bounded(file_storage, web, hook):
    big = connect(web)
    try:
        big.sendall(request_head(hook.webhook_token, SPOOL - 100_000) + b"-" * 1000)  # under way, counted whole
        with connect(web) as sock:  # the next one does not fit beside it: refused before its body is read
            sock.sendall(request_head(hook.webhook_token, 200_000))
            status, head, detail = raw_answer(sock)
        assert status == 503 and b"POTAFLOW_WEB_SPOOL_MAX_BYTES" in detail, detail
        assert b"\r\nRetry-After: " in head
        with connect(web) as sock:  # one that alone is larger can never fit
            sock.sendall(request_head(hook.webhook_token, SPOOL + 1))
            status, detail = answer(sock)
        assert status == 413 and b"POTAFLOW_WEB_SPOOL_MAX_BYTES" in detail, detail
        big.shutdown(socket.SHUT_WR)  # the big one gives up: answered, its bytes no longer held
        assert answer(big)[0] == 400
    finally:
        big.close()
    body = closed(part("upload", "after.bin", b"a" * 200_000))
    with connect(web) as sock:
        sock.sendall(request_head(hook.webhook_token, len(body)) + body)
        status, detail = answer(sock)
    assert status == 202, detail
    assert RunFile.objects.get().name == "after.bin"


@pytest.mark.slow
@pytest.mark.services  # holds a write transaction open while the web writes: SQLite has one writer at a time
def test_the_pruner_never_takes_a_file_whose_request_is_still_read(file_storage, web, hook):
    first = b"1" * 70_000
    body = closed(part("first", "first.bin", first) + b"\r\n" + part("second", "second.bin", b"2" * 200_000))
    with connect(web) as sock:
        with idempotency_key_held(hook, "pruned?"):  # the application writes both files, then its run waits
            sock.sendall(request_head(hook.webhook_token, len(body), "Idempotency-Key: pruned?\r\n") + body)
            wait_for(lambda: RunFile.objects.filter(name="second.bin").exclude(sha256="").exists(),
                     message="both files written whole, their run not committed")  # fmt: skip
            assert Run.objects.count() == 1  # the held one: the request's run is not in yet
            retention.prune()  # a pass while the request is still being handled
        status, detail = answer(sock)
    assert status == 202, detail
    run = Run.objects.get()
    kept = RunFile.objects.get(pk=run.payload["files"]["first"]["id"])
    assert (kept.run_id, kept.state, kept.size) == (run.pk, FileState.READY, len(first))
    assert first in file_storage.objects().values()


@pytest.mark.slow
def test_the_logs_never_hold_a_download_link_s_signature_nor_a_webhook_token(web, hook):
    token = links.token_for(RunFile(pk=uuid.uuid4(), organization_id=hook.organization_id))
    with connect(web) as sock:
        sock.sendall(f"GET /files/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        assert answer(sock)[0] == 404
    with connect(web) as sock:  # a refused webhook: Django logs the request (with its path) as a warning
        sock.sendall(f"POST /hooks/{hook.webhook_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{bad,".encode())  # fmt: skip
        assert answer(sock)[0] == 400
    signature = token.rsplit(":", 1)[1]
    file_id = token.split(".", 1)[0]
    log = wait_for(lambda: (text := web.log_path.read_text()) and file_id in text and "Bad Request" in text and text,
                   message="the access and warning lines")  # fmt: skip
    assert f"/files/{file_id}[redacted]" in log
    assert signature not in log and hook.webhook_token not in log


# -- in process --------------------------------------------------------------------
def test_a_multipart_body_without_its_closing_boundary_keeps_nothing(file_storage, org):
    """A body cut in the middle of a file: Django's parser drops the file quietly (the run was
    accepted without it, its row left half-written)."""
    hook = workflow_create(organization=org, name="Cut", trigger_type=TriggerType.WEBHOOK)
    body = closed(part("whole", "whole.bin", b"w" * 100)) + part("cut", "cut.bin", b"c" * 5000)
    body = body.replace(f"--{BOUNDARY}--\r\n".encode(), b"")  # the first file's end, no closing boundary
    response = Client().post(f"/hooks/{hook.webhook_token}", data=body,
                             content_type=f"multipart/form-data; boundary={BOUNDARY}")  # fmt: skip
    assert response.status_code == 400 and "cut.bin" in response.json()["detail"], response.content
    assert nothing_kept(file_storage) and file_storage.open_multipart_uploads() == []


def test_a_download_link_dies_with_its_organization(file_storage, org, other_org):
    row = file_services.write_file(organization_id=org.pk, origin="step", name="r.csv", content_type="",
                                   chunks=[b"a,b\n"], limit=100, setting="POTAFLOW_UPLOAD_MAX_BYTES")  # fmt: skip
    url = links.download_url(row)
    assert Client().get(url).status_code == 200
    Organization.objects.filter(pk=org.pk).delete()  # its files wait for the pruner's next pass
    assert RunFile.objects.filter(pk=row.pk).exists()
    assert Client().get(url).status_code == 404
