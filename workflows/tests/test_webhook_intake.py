"""Webhook intake hardening: chunked bodies, replays, redaction, rate limits.

Chunked bodies are tested through a real gunicorn (the production server)
with a raw socket, and through the Django test client.
"""

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC
from io import BytesIO
from pathlib import Path

import pytest
from django.test import Client

from testing.network import free_port
from testing.worker import subprocess_env
from workflows.models import Run, TriggerType
from workflows.services import workflow_create

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]
BASE_DIR = Path(__file__).resolve().parents[2]
GUNICORN_LIMIT = 100_000


def url(wf):
    return f"/hooks/{wf.webhook_token}"


@pytest.fixture
def hook_wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


# -- a real gunicorn -----------------------------------------------------------------
@pytest.fixture(scope="module")
def gunicorn_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn serving the test database, access log in a file; yields (port, access_log_path)."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("gunicorn")
    access_log = log_dir / "access.log"
    with django_db_blocker.unblock():
        env = subprocess_env(
            {
                "ALLOWED_HOSTS": "127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",
                "POTAFLOW_WEBHOOK_MAX_BYTES": str(GUNICORN_LIMIT),
            }
        )
    command = [
        sys.executable, "-m", "gunicorn", "potaflow.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--no-control-socket", "--access-logfile", str(access_log),
        "--logger-class", "potaflow.gunicorn_logging.RedactingLogger",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=BASE_DIR,
        env=env,
        stdout=open(log_dir / "out.log", "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("gunicorn did not start:\n" + (log_dir / "out.log").read_text())
            time.sleep(0.2)
    yield port, access_log
    os.killpg(process.pid, 15)
    process.wait(timeout=15)


def raw_request(port: int, head: str, body_parts=(), *, chunked=True) -> tuple[int, dict]:
    """Send one HTTP/1.1 request over a raw socket; returns (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for part in body_parts:
                sock.sendall((f"{len(part):x}\r\n".encode() + part + b"\r\n") if chunked else part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) and closed before reading everything
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    status_line, _, rest = data.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload or b"null")


def chunked_head(wf, content_type="application/json") -> str:
    return (
        f"POST /hooks/{wf.webhook_token} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )


# -- 6: chunked bodies -------------------------------------------------------------
@pytest.mark.slow  # starts gunicorn
@pytest.mark.django_db(transaction=True)
def test_a_chunked_json_body_through_gunicorn_is_stored(gunicorn_server, org):
    port, _ = gunicorn_server
    wf = workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    document = json.dumps({"email": "ann@example.com", "items": list(range(2000))}).encode()
    parts = [document[i : i + 777] for i in range(0, len(document), 777)]
    status, answer = raw_request(port, chunked_head(wf), parts)
    assert status == 202, answer
    assert Run.objects.get(pk=answer["run_id"]).payload["body"] == json.loads(document)


@pytest.mark.slow  # starts gunicorn
@pytest.mark.django_db(transaction=True)
def test_a_chunked_form_body_through_gunicorn_is_stored(gunicorn_server, org):
    port, _ = gunicorn_server
    wf = workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    status, answer = raw_request(port, chunked_head(wf, "application/x-www-form-urlencoded"), [b"a=1&b=", b"two"])
    assert status == 202, answer
    assert Run.objects.get(pk=answer["run_id"]).payload["body"] == {"a": "1", "b": "two"}


@pytest.mark.slow  # starts gunicorn
@pytest.mark.django_db(transaction=True)
def test_a_10_mb_chunked_body_through_gunicorn_is_413_and_no_run(gunicorn_server, org):
    port, _ = gunicorn_server
    wf = workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    piece = b"x" * (1024 * 1024)
    status, answer = raw_request(port, chunked_head(wf, "text/plain"), [piece] * 10)
    assert status == 413, answer
    assert f"the limit is {GUNICORN_LIMIT} bytes" in answer["detail"]
    assert Run.objects.count() == 0


def chunked_environ(body: bytes, *, terminated: bool, content_type: str = "application/json") -> dict:
    """A chunked request as gunicorn hands it over: no Content-Length, the de-chunked stream."""
    environ = {
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": content_type,
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": BytesIO(body),
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    return environ


@pytest.mark.django_db
def test_a_chunked_body_from_a_terminated_stream_is_read_with_the_test_client(hook_wf):
    body = json.dumps({"qty": 3}).encode()
    response = Client().generic("POST", url(hook_wf), **chunked_environ(body, terminated=True))
    assert response.status_code == 202, response.content
    assert Run.objects.get(pk=response.json()["run_id"]).payload["body"] == {"qty": 3}


@pytest.mark.django_db
def test_a_chunked_body_over_the_limit_is_413_while_reading(hook_wf, settings):
    settings.POTAFLOW_WEBHOOK_MAX_BYTES = 1000

    class Endless(BytesIO):
        reads = 0

        def read(self, size=-1):
            Endless.reads += 1
            return b"y" * size  # never ends: only the limit stops the reader

    environ = {**chunked_environ(b"", terminated=True, content_type="text/plain"), "wsgi.input": Endless()}
    response = Client().generic("POST", url(hook_wf), **environ)
    assert response.status_code == 413 and "the limit is 1000 bytes" in response.json()["detail"]
    assert Endless.reads <= 2 and Run.objects.count() == 0


@pytest.mark.django_db
def test_a_chunked_body_on_a_server_that_cannot_frame_it_is_411_never_null(hook_wf):
    body = json.dumps({"qty": 3}).encode()
    response = Client().generic("POST", url(hook_wf), **chunked_environ(body, terminated=False))
    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert Run.objects.count() == 0


# -- 5: a captured signed message cannot be replayed with a fresh Idempotency-Key ------
@pytest.mark.django_db
def test_a_signed_message_replayed_with_a_fresh_idempotency_key_is_a_duplicate(org):
    from datetime import datetime

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wf = workflow_create(
        organization=org, name="Signed", trigger_type=TriggerType.WEBHOOK, webhook_secret=secret, steps=STEPS
    )
    body = '{"type": "invoice.paid"}'
    signature = Webhook(secret).sign("msg_captured", datetime.now(tz=UTC), body)
    signed = {
        "webhook-id": "msg_captured",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signature,
    }
    first = Client().post(url(wf), data=body, content_type="application/json", headers=signed)
    assert first.status_code == 202
    for fresh in ("replay-1", "replay-2"):
        copy = Client().post(
            url(wf), data=body, content_type="application/json", headers={**signed, "Idempotency-Key": fresh}
        )
        assert copy.status_code == 200, copy.json()
        assert copy.json() == {"run_id": first.json()["run_id"], "duplicate": True}
    assert Run.objects.count() == 1
    assert Run.objects.get().idempotency_key == "msg_captured"


@pytest.mark.django_db
def test_without_signatures_the_idempotency_key_header_still_names_the_event(hook_wf):
    first = Client().post(url(hook_wf), data="{}", content_type="application/json", headers={"Idempotency-Key": "a"})
    other = Client().post(url(hook_wf), data="{}", content_type="application/json", headers={"Idempotency-Key": "b"})
    assert first.status_code == 202 and other.status_code == 202


# -- 11: secrets never reach stored payloads or logs ----------------------------------
@pytest.mark.django_db
def test_sensitive_headers_and_query_values_are_stored_redacted(hook_wf):
    response = Client().post(
        url(hook_wf) + "?token=tok-123&api_key=k-456&source=crm&API_KEY=x",
        data="{}",
        content_type="application/json",
        headers={
            "X-Api-Key": "live-key",
            "Authorization": "Bearer secret-token",
            "Cookie": "session=abc",
            "X-Trace": "kept",
        },
    )
    assert response.status_code == 202
    payload = Run.objects.get(pk=response.json()["run_id"]).payload
    assert payload["headers"]["x-api-key"] == "[redacted]"
    assert payload["headers"]["authorization"] == "[redacted]"
    assert payload["headers"]["cookie"] == "[redacted]"
    assert payload["headers"]["x-trace"] == "kept"
    assert payload["query"] == {
        "token": "[redacted]",
        "api_key": "[redacted]",
        "source": "crm",
        "API_KEY": "[redacted]",
    }
    stored = json.dumps(payload)
    for secret in ("live-key", "secret-token", "session=abc", "tok-123", "k-456"):
        assert secret not in stored


@pytest.mark.django_db
def test_the_redacted_names_are_settings(hook_wf, settings):
    settings.POTAFLOW_REDACT_HEADERS = ["x-tenant-secret"]
    settings.POTAFLOW_REDACT_QUERY = ["pin"]
    response = Client().post(
        url(hook_wf) + "?pin=1234&token=shown",
        data="{}",
        content_type="application/json",
        headers={"X-Tenant-Secret": "s", "X-Api-Key": "shown"},
    )
    payload = Run.objects.get(pk=response.json()["run_id"]).payload
    assert payload["headers"]["x-tenant-secret"] == "[redacted]" and payload["headers"]["x-api-key"] == "shown"
    assert payload["query"] == {"pin": "[redacted]", "token": "shown"}


@pytest.mark.django_db
def test_the_signature_is_checked_before_its_header_is_redacted(org):
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wf = workflow_create(
        organization=org, name="Signed", trigger_type=TriggerType.WEBHOOK, webhook_secret=secret, steps=STEPS
    )
    body = '{"a": 1}'
    headers = {
        "webhook-id": "msg_9",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": Webhook(secret).sign("msg_9", datetime.now(tz=UTC), body),
    }
    response = Client().post(url(wf), data=body, content_type="application/json", headers=headers)
    assert response.status_code == 202
    assert Run.objects.get().payload["headers"]["webhook-signature"] == "[redacted]"


@pytest.mark.django_db
def test_django_request_warnings_mask_the_webhook_token(org, caplog):
    wf = workflow_create(
        organization=org, name="Signed", trigger_type=TriggerType.WEBHOOK, webhook_secret="s" * 20, steps=STEPS
    )
    with caplog.at_level("WARNING", logger="django.request"):
        assert Client().post(url(wf) + "?api_key=abc", data="{}", content_type="application/json").status_code == 401
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/hooks/[redacted]" in text and wf.webhook_token not in text


@pytest.mark.slow  # starts gunicorn
@pytest.mark.django_db(transaction=True)
def test_gunicorn_access_log_masks_the_webhook_token_and_secret_query_values(gunicorn_server, org):
    port, access_log = gunicorn_server
    wf = workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    head = (
        f"POST /hooks/{wf.webhook_token}?token=tok-secret&source=crm HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
        f"Referer: http://127.0.0.1/hooks/{wf.webhook_token}\r\n\r\n{{}}"
    )
    status, _ = raw_request(port, head, chunked=False)
    assert status == 202
    deadline = time.monotonic() + 10
    while "source=crm" not in access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = access_log.read_text()
    assert "POST /hooks/[redacted]?token=[redacted]&source=crm" in log, log
    assert wf.webhook_token not in log and "tok-secret" not in log


# -- 9: per-workflow rate limit ----------------------------------------------------------
@pytest.mark.django_db
def test_events_over_the_rate_are_429_with_retry_after_and_not_accepted(hook_wf, org, settings, caplog):
    from workflows.intake import ratelimit

    settings.POTAFLOW_WEBHOOK_RATE = "5/h"  # one window for the whole test
    settings.POTAFLOW_WEBHOOK_BURST = None
    other = workflow_create(organization=org, name="Other", trigger_type=TriggerType.WEBHOOK, steps=STEPS)

    def post(wf, key):
        return Client().post(url(wf), data="{}", content_type="application/json", headers={"Idempotency-Key": key})

    with caplog.at_level("WARNING", logger="workflows.intake.ratelimit"):
        answers = [post(hook_wf, f"e{i}") for i in range(8)]
    assert [a.status_code for a in answers] == [202] * 5 + [429] * 3
    refused = answers[5]
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert refused.json()["detail"].startswith("Too many events for this workflow (at most 5 per 3600 s)")
    assert Run.objects.filter(workflow=hook_wf).count() == 5
    assert post(other, "x").status_code == 202  # the limit is per workflow
    assert ratelimit.rejected_total(hook_wf.pk) == 3 and ratelimit.rejected_total() == 3
    assert len([r for r in caplog.records if "webhook rate limit" in r.getMessage()]) == 1


def test_the_burst_sets_the_window():
    from workflows.intake.ratelimit import parse_rate

    limit = parse_rate("50/s", 100)
    assert limit.burst == 100 and limit.window_seconds == 2
    assert parse_rate("off") is None and parse_rate("600/min").window_seconds == 60


def test_the_limit_is_atomic_across_concurrent_callers_on_a_shared_redis_cache(settings):
    """Threads with their own Redis connections share one count: never more than the burst."""
    import threading

    from django.core.cache import cache

    from workflows.intake import ratelimit

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/10"}
    }
    settings.POTAFLOW_WEBHOOK_RATE = "100/h"
    settings.POTAFLOW_WEBHOOK_BURST = 100
    cache.clear()
    now = time.time()
    allowed = []

    def sender():
        allowed.extend(ratelimit.take(42, now=now).allowed for _ in range(50))

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 100 and allowed.count(False) == 300
    assert ratelimit.rejected_total(42) == 300
    cache.clear()


def test_a_malformed_rate_setting_refuses_to_start(tmp_path):
    env = {**os.environ, "POTAFLOW_VAR_DIR": str(tmp_path), "POTAFLOW_WEBHOOK_RATE": "fifty"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "POTAFLOW_WEBHOOK_RATE='fifty' is not a rate like 50/s" in result.stderr


@pytest.mark.django_db
def test_the_limit_fails_open_when_the_cache_is_down(hook_wf, settings, caplog):
    """A cache outage must not refuse every event: let it through, and say so in the log."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    settings.POTAFLOW_WEBHOOK_RATE = "1/h"
    with caplog.at_level("ERROR", logger="workflows.intake.ratelimit"):
        answers = [Client().post(url(hook_wf), data="{}", content_type="application/json") for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert "the cache is unavailable" in caplog.text
