"""email.send over real SMTP (aiosmtpd, with AUTH and STARTTLS) and against a SendGrid peer."""

import dataclasses
import hashlib
import time

import pytest

from integrations.email.action import SendEmail
from integrations.errors import ConfigError, PermanentError, RetryableError
from integrations.tests.support import file_ctx, make_ctx, stored_file
from testing.network import Reply, SMTPServer, free_port

action = SendEmail()

MESSAGE = {
    "to": ["ada@example.com", "grace@example.com"],
    "cc": "linus@example.com",
    "bcc": ["hidden@example.com"],
    "reply_to": "support@example.com",
    "subject": "Order #42 shipped",
    "text": "Plain body",
    "html": "<p>HTML <b>body</b></p>",
    "headers": {"X-Potaflow-Run": "7"},
}


def smtp_cred(server, **extra):
    cred = {"host": "127.0.0.1", "port": server.port, "username": "mailer", "password": "s3cret",
            "security": "none", "from_email": "robot@acme.test"}  # fmt: skip
    cred.update(extra)
    return cred


def test_smtp_delivers_to_all_recipients_with_both_bodies_and_headers(allow_loopback, smtp_server):
    out = action.run(MESSAGE, make_ctx(smtp_cred(smtp_server), "smtp"))
    (mail,) = smtp_server.messages
    assert mail.login == "mailer"
    assert mail.mail_from == "robot@acme.test"
    assert sorted(mail.rcpt_tos) == sorted(
        ["ada@example.com", "grace@example.com", "linus@example.com", "hidden@example.com"]
    )
    msg = mail.message()
    assert msg["Subject"] == "Order #42 shipped"
    assert msg["To"] == "ada@example.com, grace@example.com"
    assert msg["Cc"] == "linus@example.com"
    assert msg["Bcc"] is None  # blind copies never appear in the headers
    assert msg["Reply-To"] == "support@example.com"
    assert msg["X-Potaflow-Run"] == "7"
    assert msg["Message-ID"] == out["message_id"]
    assert msg.get_body(("plain",)).get_content().strip() == "Plain body"
    assert msg.get_body(("html",)).get_content().strip() == "<p>HTML <b>body</b></p>"
    assert out["provider"] == "smtp"
    assert out["to"] == ["ada@example.com", "grace@example.com"]
    assert out["bcc_count"] == 1


def test_an_html_only_message_is_sent_as_html(allow_loopback, smtp_server):
    action.run({"to": "a@example.com", "subject": "s", "html": "<h1>Hi</h1>"}, make_ctx(smtp_cred(smtp_server), "smtp"))
    msg = smtp_server.messages[0].message()
    assert msg.get_content_type() == "text/html"


def test_an_smtp_auth_failure_is_permanent_and_named(allow_loopback, smtp_server):
    with pytest.raises(PermanentError, match=r"authentication failed: 535"):
        action.run(MESSAGE, make_ctx(smtp_cred(smtp_server, password="wrong"), "smtp"))
    assert smtp_server.messages == []


def test_starttls_with_a_trusted_certificate(settings, smtp_starttls_server):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["localhost"]
    cred = smtp_cred(smtp_starttls_server, host="localhost", security="starttls")
    out = action.run(MESSAGE, make_ctx(cred, "smtp"))
    (mail,) = smtp_starttls_server.messages
    assert mail.login == "mailer"
    assert mail.message()["Message-ID"] == out["message_id"]


def test_starttls_refuses_an_untrusted_certificate(allow_loopback, tls_certificate, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = SMTPServer(tls=tls_certificate).start()
    try:
        with pytest.raises(PermanentError, match="certificate not trusted"):
            action.run(MESSAGE, make_ctx(smtp_cred(server, security="starttls"), "smtp"))
        assert server.messages == []
    finally:
        server.stop()


def test_plain_smtp_against_a_starttls_only_server_is_permanent(allow_loopback, smtp_starttls_server):
    with pytest.raises(PermanentError, match="AUTH extension not supported"):
        action.run(MESSAGE, make_ctx(smtp_cred(smtp_starttls_server), "smtp"))


def test_an_unreachable_smtp_server_is_retryable(allow_loopback):
    cred = {"host": "127.0.0.1", "port": free_port(), "security": "none", "from_email": "r@acme.test"}
    with pytest.raises(RetryableError, match="ConnectionRefusedError"):
        action.run(MESSAGE, make_ctx(cred, "smtp"))


def test_a_private_smtp_host_is_blocked_unless_allow_listed(no_exceptions, smtp_server):
    with pytest.raises(PermanentError, match="blocked destination"):
        action.run(MESSAGE, make_ctx(smtp_cred(smtp_server), "smtp"))
    assert smtp_server.messages == []


def test_config_needs_a_body_and_recipients():
    with pytest.raises(ConfigError):
        action.validate_config({"to": "a@example.com", "subject": "no body"})
    with pytest.raises(ConfigError, match="config"):
        action.validate_config({"subject": "s", "text": "t"})
    action.validate_config({"to": "{{ trigger.body.email }}", "subject": "s", "text": "t"})


# -- SendGrid ------------------------------------------------------------------
SG_CRED = {"api_key": "SG.test-key", "from_email": "robot@acme.test"}


@pytest.fixture
def sendgrid_url(settings, fake_sendgrid):
    settings.POTAFLOW_SENDGRID_API_URL = fake_sendgrid.url
    return fake_sendgrid


def test_sendgrid_posts_the_documented_mail_send_body(sendgrid_url):
    out = action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))
    (req,) = sendgrid_url.requests
    assert (req.method, req.path) == ("POST", "/v3/mail/send")
    assert req.headers["authorization"] == "Bearer SG.test-key"
    assert req.headers["content-type"].startswith("application/json")
    assert req.json() == {
        "personalizations": [
            {
                "to": [{"email": "ada@example.com"}, {"email": "grace@example.com"}],
                "cc": [{"email": "linus@example.com"}],
                "bcc": [{"email": "hidden@example.com"}],
            }
        ],
        "from": {"email": "robot@acme.test"},
        "reply_to": {"email": "support@example.com"},
        "subject": "Order #42 shipped",
        "content": [
            {"type": "text/plain", "value": "Plain body"},
            {"type": "text/html", "value": "<p>HTML <b>body</b></p>"},
        ],
        "headers": {"X-Potaflow-Run": "7", "Message-ID": out["message_id"]},
        "custom_args": {"potaflow_message_id": out["message_id"]},
    }
    assert out["status"] == 202
    assert out["message_id"] and out["message_id"] == out["message_id"].strip()


def test_a_sendgrid_400_is_permanent_with_sendgrids_message(sendgrid_url):
    error = {
        "message": "Does not contain a valid address.",
        "field": "personalizations.0.to.0.email",
        "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to",
    }
    sendgrid_url.failures.append(Reply(400, {"errors": [error]}))
    with pytest.raises(PermanentError, match=r"400: Does not contain a valid address. \(field: personalizations.0.to"):
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))


def test_a_bad_sendgrid_key_is_permanent(sendgrid_url):
    with pytest.raises(PermanentError, match="401: The provided authorization grant is invalid"):
        action.run(MESSAGE, make_ctx({**SG_CRED, "api_key": "SG.revoked"}, "sendgrid_api_key"))


def test_sendgrid_5xx_and_429_are_retryable(sendgrid_url):
    sendgrid_url.failures.append(Reply(503, {"errors": [{"message": "Service Unavailable", "field": None}]}))
    with pytest.raises(RetryableError, match="503"):
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))
    reset = int(time.time()) + 20
    sendgrid_url.failures.append(
        Reply(429, {"errors": [{"field": None, "message": "too many requests"}]}, {"X-RateLimit-Reset": str(reset)})
    )
    with pytest.raises(RetryableError, match="429: too many requests") as exc:
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))
    assert 15 <= exc.value.retry_after <= 21


def test_a_missing_from_address_is_permanent(sendgrid_url):
    with pytest.raises(PermanentError, match="no from address"):
        action.run(MESSAGE, make_ctx({"api_key": "SG.test-key", "from_email": ""}, "sendgrid_api_key"))
    assert sendgrid_url.requests == []


# -- odd SendGrid answers ------------------------------------------------------
def test_an_html_502_from_sendgrid_is_retryable_with_the_page_quoted(sendgrid_url):
    sendgrid_url.failures.append(Reply(502, "<html><h1>502 Bad Gateway</h1></html>", {"Content-Type": "text/html"}))
    with pytest.raises(RetryableError, match="SendGrid answered 502: <html><h1>502 Bad Gateway"):
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))


@pytest.mark.parametrize(
    "body",
    [b"", b'{"errors": "not a list"}', b'{"errors": [1, "x", null]}', b"[]", b'"just a string"', b"{bad json"],
)
def test_a_sendgrid_400_with_an_odd_error_body_is_permanent(sendgrid_url, body):
    sendgrid_url.failures.append(Reply(400, body, {"Content-Type": "application/json"}))
    with pytest.raises(PermanentError, match="SendGrid answered 400"):
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))


def test_a_sendgrid_error_message_with_a_nul_is_cleaned(sendgrid_url):
    sendgrid_url.failures.append(Reply(400, b'{"errors": [{"message": "bad\\u0000thing", "field": "from"}]}'))
    with pytest.raises(PermanentError, match="bad\ufffdthing \\(field: from\\)"):
        action.run(MESSAGE, make_ctx(SG_CRED, "sendgrid_api_key"))


def test_every_attempt_of_a_step_sends_the_same_message_id(sendgrid_url):
    """A stable Message-ID from the step's idempotency key lets mail systems drop a repeat."""
    ctx = dataclasses.replace(make_ctx(SG_CRED, "sendgrid_api_key"), idempotency_key="potaflow-run-1-0")
    first = action.run(MESSAGE, dataclasses.replace(ctx, attempt=1))
    second = action.run(MESSAGE, dataclasses.replace(ctx, attempt=2))
    assert first["message_id"] == second["message_id"] == "<potaflow-run-1-0@acme.test>"
    assert [r.json()["headers"]["Message-ID"] for r in sendgrid_url.requests] == [first["message_id"]] * 2
    other = action.run(MESSAGE, dataclasses.replace(ctx, idempotency_key="potaflow-run-2-0"))
    assert other["message_id"] == "<potaflow-run-2-0@acme.test>"


# -- attachments (issue 23) -----------------------------------------------------------
def test_smtp_and_sendgrid_send_attachments_with_their_bytes(
    file_storage, organization, allow_loopback, smtp_server, fake_sendgrid, settings
):
    settings.POTAFLOW_SENDGRID_API_URL = fake_sendgrid.url
    pdf = bytes(range(256)) * 40
    refs = [
        stored_file(organization, "report.pdf", pdf, "application/pdf"),
        stored_file(organization, "a.csv", b"a\n1\n"),
    ]
    config = {"to": "ada@example.com", "subject": "Files", "text": "see attached", "attachments": refs}
    out = action.run(config, file_ctx(organization, smtp_cred(smtp_server), "smtp"))
    (mail,) = smtp_server.messages
    got = mail.attachments()
    assert [(name, kind) for name, kind, _ in got] == [
        ("report.pdf", "application/pdf"),
        ("a.csv", "application/octet-stream"),
    ]
    assert hashlib.sha256(got[0][2]).hexdigest() == hashlib.sha256(pdf).hexdigest() == refs[0]["sha256"]
    assert [a["id"] for a in out["attachments"]] == [r["id"] for r in refs]
    sendgrid = {"api_key": "SG.test-key", "from_email": "robot@acme.test"}
    action.run(config, file_ctx(organization, sendgrid, "sendgrid_api_key"))
    (first, second) = fake_sendgrid.attachments()
    assert first[:2] == ("report.pdf", "application/pdf") and hashlib.sha256(first[2]).hexdigest() == refs[0]["sha256"]
    assert second[2] == b"a\n1\n"


def test_attachments_over_their_limit_are_refused_naming_it(file_storage, organization, allow_loopback, smtp_server,
                                                            settings):  # fmt: skip
    settings.POTAFLOW_SEND_FILE_MAX_BYTES = 100
    refs = [stored_file(organization, "a", b"x" * 60), stored_file(organization, "b", b"y" * 60)]
    config = {"to": "ada@example.com", "subject": "Files", "text": "x", "attachments": refs}
    with pytest.raises(PermanentError, match=r"config.attachments\[1\].*POTAFLOW_SEND_FILE_MAX_BYTES"):
        action.run(config, file_ctx(organization, smtp_cred(smtp_server), "smtp"))
    assert smtp_server.messages == []
