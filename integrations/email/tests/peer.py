"""Local e-mail peers: a SendGrid v3 Mail Send server
(https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send) and an
aiosmtpd SMTP server (AUTH, optional STARTTLS).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from testing.http_server import RecordedRequest, RecordingHTTPServer, Reply, free_port


class FakeSendGrid(RecordingHTTPServer):
    """``POST /v3/mail/send``: 202 with an empty body and ``X-Message-Id`` on success;
    ``{"errors": [{"message", "field", "help"}]}`` with 400/401/403/413 otherwise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.valid_keys = {"SG.test-key"}
        self.failures: list[Reply] = []  # injected replies (e.g. 500, 429), consumed in order
        self.sent: list[dict[str, Any]] = []

    def _error(self, status: int, message: str, field_name: str | None = None) -> Reply:
        return Reply(status, {"errors": [{"message": message, "field": field_name, "help": None}]})

    def handle(self, request: RecordedRequest) -> Reply:
        if (request.method, request.path) != ("POST", "/v3/mail/send"):
            return self._error(404, "Not found")
        if self.failures:
            return self.failures.pop(0)
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_keys:
            return self._error(401, "The provided authorization grant is invalid, expired, or revoked")
        try:
            mail = request.json()
        except ValueError:
            return self._error(400, "Bad Request", None)
        personalizations = mail.get("personalizations") or []
        if not personalizations:
            return self._error(
                400,
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        for index, p in enumerate(personalizations):
            if not p.get("to"):
                return self._error(
                    400,
                    "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",  # noqa: E501 - SendGrid's wording
                    f"personalizations.{index}.to",
                )
            if not (p.get("subject") or mail.get("subject")):
                return self._error(
                    400,
                    "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",  # noqa: E501 - SendGrid's wording
                    "subject",
                )
        if not (mail.get("from") or {}).get("email"):
            return self._error(
                400,
                "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",  # noqa: E501 - SendGrid's wording
                "from",
            )
        content = mail.get("content") or []
        if not content:
            return self._error(
                400,
                "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",  # noqa: E501 - SendGrid's wording
                "content",
            )
        for index, attachment in enumerate(mail.get("attachments") or []):
            if not attachment.get("filename"):
                return self._error(400, "The attachment filename parameter is required.",
                                   f"attachments.{index}.filename")  # fmt: skip
            try:
                base64.b64decode(attachment.get("content") or "", validate=True)
            except (binascii.Error, ValueError):
                return self._error(400, "The attachment content must be base64 encoded.",
                                   f"attachments.{index}.content")  # fmt: skip
        self.sent.append(mail)
        return Reply(202, b"", {"X-Message-Id": secrets.token_urlsafe(16)})

    def attachments(self) -> list[tuple[str, str, bytes]]:
        """(filename, type, bytes) of every attachment of every mail sent."""
        return [
            (a["filename"], a.get("type", ""), base64.b64decode(a["content"]))
            for mail in self.sent
            for a in mail.get("attachments") or []
        ]


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None

    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)

    def attachments(self) -> list[tuple[str, str, bytes]]:
        """(filename, content type, bytes) of each attachment, as a mail reader decodes them."""
        return [
            (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
            for part in self.message().iter_attachments()
        ]


class SMTPServer:
    """aiosmtpd on 127.0.0.1: records messages; AUTH PLAIN/LOGIN against ``users``;
    with ``tls=(cert, key)`` it offers STARTTLS and requires it before AUTH.
    """

    def __init__(self, *, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.messages: list[ReceivedMail] = []
        self.users = users if users is not None else {"mailer": "s3cret"}
        server = self

        class Handler:
            async def handle_DATA(self, smtp_server, session, envelope):  # noqa: N802 - aiosmtpd hook name
                login = session.auth_data.login.decode() if getattr(session.auth_data, "login", None) else None
                server.messages.append(
                    ReceivedMail(
                        envelope.mail_from,
                        list(envelope.rcpt_tos),
                        envelope.original_content or envelope.content,
                        login,
                    )
                )
                return "250 OK queued as fake"

        def authenticator(smtp_server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
            password = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
            ok = login is not None and server.users.get(login) == password
            # handled=False: aiosmtpd then answers 235, or 535 on failure, itself.
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs: dict[str, Any] = {
            "authenticator": authenticator,
            # Without TLS, AUTH is offered and checked but not required (aiosmtpd warns about
            # requiring it in clear); with TLS it is required, after STARTTLS.
            "auth_required": bool(self.users) and tls is not None,
            "auth_require_tls": tls is not None,
        }
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        self.port = free_port()
        self.host = "127.0.0.1"
        self.controller = Controller(Handler(), hostname=self.host, port=self.port, **kwargs)

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
