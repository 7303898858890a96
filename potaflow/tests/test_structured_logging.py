"""Log lines: JSON objects in production, labelled with the engine's log context, redacted.

The worker, gunicorn and beat writing them for real: workflows/tests/test_operability.py.
"""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.structured_logging import (
    ContextFilter,
    JsonFormatter,
    PlainFormatter,
    bind,
    current_context,
    log_context,
    process_type,
)

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def capture():
    """A logger whose lines land in a buffer, formatted as the console handler formats them."""

    def make(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
        buffer = io.StringIO()
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(formatter)
        handler.addFilter(ContextFilter())
        logger = logging.getLogger(f"potaflow.tests.capture.{id(buffer)}")
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        return logger, buffer

    return make


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_carries_the_log_context_inside_its_block_only(capture):
    logger, buffer = capture(JsonFormatter(process="worker"))
    logger.info("before")
    with log_context(run_id="r-1", step=None, attempt=None, workflow_id=None, organization_id=None):
        bind(step="lookup", attempt=2, workflow_id=7, organization_id=3)
        logger.warning("inside %s", "the step", extra={"http_status": 503})
    logger.info("after")

    before, inside, after = lines(buffer)
    assert set(before) == {"ts", "level", "logger", "message", "process", "pid"}
    assert before["process"] == "worker" and before["pid"] == os.getpid()
    assert inside["message"] == "inside the step" and inside["level"] == "WARNING"
    labels = {k: inside[k] for k in ("run_id", "step", "attempt", "workflow_id", "organization_id")}
    assert labels == {"run_id": "r-1", "step": "lookup", "attempt": 2, "workflow_id": 7, "organization_id": 3}
    assert inside["http_status"] == 503  # extra= fields are kept
    assert "run_id" not in after
    assert current_context() == {}


def test_nested_contexts_add_labels_and_end_with_their_block(capture):
    logger, buffer = capture(JsonFormatter())
    with log_context(run_id="outer"):
        with log_context(step="inner"):
            logger.info("both")
        logger.info("outer only")
    bind(step="ignored outside any block")
    logger.info("none")
    both, outer, none = lines(buffer)
    assert (both["run_id"], both["step"]) == ("outer", "inner")
    assert outer["run_id"] == "outer" and "step" not in outer
    assert "run_id" not in none and "step" not in none


def test_an_exception_is_one_json_line_with_its_traceback_redacted(capture):
    logger, buffer = capture(JsonFormatter())
    try:
        raise ValueError("could not reach /hooks/abcdefSECRET")
    except ValueError:
        logger.exception("step failed")
    (entry,) = lines(buffer)
    assert entry["level"] == "ERROR"
    assert "ValueError" in entry["exception"] and "/hooks/[redacted]" in entry["exception"]
    assert "abcdefSECRET" not in buffer.getvalue()
    assert buffer.getvalue().count("\n") == 1


def test_the_plain_format_shows_the_context_at_the_end(capture):
    logger, buffer = capture(PlainFormatter())
    with log_context(run_id="r-9", step="send"):
        logger.info("sent")
    logger.info("idle")
    sent, idle = buffer.getvalue().splitlines()
    assert sent.endswith("INFO " + logger.name + ": sent [run_id=r-9 step=send]")
    assert idle.endswith(": idle")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/app/.venv/bin/gunicorn", "potaflow.wsgi:application"], "web"),
        (["/usr/lib/python3/site-packages/gunicorn/__main__.py", "x"], "web"),
        (["/app/.venv/bin/celery", "-A", "potaflow", "worker", "-l", "info"], "worker"),
        (["/x/site-packages/celery/__main__.py", "-A", "potaflow", "beat"], "beat"),
        (["manage.py", "runserver"], "web"),
        (["manage.py", "potaflow_status"], "potaflow_status"),
    ],
)
def test_the_process_type_names_the_process(argv, expected):
    assert process_type(argv) == expected


def _log_through_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "POTAFLOW_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "potaflow.settings"}
    environment.pop("LOG_FORMAT", None)
    environment.update(env)
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('workflows.probe').warning('posted to /hooks/tokENSECRET?api_key=KEYSECRET&x=1')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_production_logs_json_lines_with_secrets_redacted(tmp_path):
    result = _log_through_settings(tmp_path, DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    entry = json.loads(line)
    assert entry["logger"] == "workflows.probe" and entry["level"] == "WARNING"
    assert entry["message"] == "posted to /hooks/[redacted]?api_key=[redacted]&x=1"
    assert "SECRET" not in result.stderr


def test_development_logs_readable_lines_unless_json_is_asked_for(tmp_path):
    plain = _log_through_settings(tmp_path, DEBUG="true")
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.strip().endswith("WARNING workflows.probe: posted to /hooks/[redacted]?api_key=[redacted]&x=1")
    asked = _log_through_settings(tmp_path, DEBUG="true", LOG_FORMAT="json")
    assert json.loads(asked.stderr)["message"].startswith("posted to /hooks/[redacted]")


def test_an_unknown_log_format_refuses_to_start(tmp_path):
    result = _log_through_settings(tmp_path, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT='xml' is not json or plain" in result.stderr


# -- every field of a record is redacted (issue 18) -------------------------------------------
TOKEN = "capabilitytoken0123456789abcdefghijklmnopqrstu"


@pytest.mark.parametrize("formatter", [JsonFormatter("web"), PlainFormatter()], ids=["json", "plain"])
def test_django_request_warnings_write_no_capability_in_any_field(capture, formatter, rf):
    """Django's 4xx warnings carry the request as a field: its repr holds the path (7 live tokens in one log)."""
    logger, buffer = capture(formatter)
    request = rf.post(f"/hooks/{TOKEN}?jwt=secret-jwt-value&page=2")
    logger.warning(
        "%s: %s", "Too Many Requests", request.get_full_path(), extra={"status_code": 429, "request": request}
    )
    try:
        raise ValueError(f"while handling /hooks/{TOKEN}")
    except ValueError:
        logger.exception("failed", extra={"url": f"https://example.com/hooks/{TOKEN}", "args_seen": [request]})
    written = buffer.getvalue()
    assert TOKEN not in written and "secret-jwt-value" not in written, written
    assert "/hooks/[redacted]" in written and "page=2" in written
    if isinstance(formatter, JsonFormatter):
        first = json.loads(written.splitlines()[0])
        assert first["request"] == "<WSGIRequest: POST '/hooks/[redacted]?jwt=[redacted]&page=2'>"
        assert first["status_code"] == 429


def test_the_redaction_defaults_cover_common_token_carriers_and_stay_configurable(settings):
    from core.redaction import sensitive_header_names, sensitive_query_names

    headers = sensitive_header_names()
    for name in ("X-Gitlab-Token", "Private-Token", "X-Shopify-Access-Token", "X-Twilio-Signature", "Authorization",
                 "X-Vendor-Api-Key", "X-Client-Secret", "X-Refresh-Token", "X-Session-Id"):  # fmt: skip
        assert name in headers, name
    for name in ("Idempotency-Key", "Content-Type", "User-Agent", "X-Request-Id"):
        assert name not in headers, name
    query = sensitive_query_names()
    for name in ("access-token", "jwt", "session", "sessionid", "private_token", "X-Amz-Signature", "my_api_key"):
        assert name in query, name
    assert "page" not in query and "email" not in query
    settings.POTAFLOW_REDACT_HEADERS = ["x-only-this", "x-*-secret", "!x-not-secret"]
    headers = sensitive_header_names()
    assert "X-Only-This" in headers and "x-app-secret" in headers and "x-not-secret" not in headers
    assert "authorization" not in headers  # the list replaces the defaults
