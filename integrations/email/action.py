"""``email.send``: over SMTP (Django's SMTP backend) or SendGrid's v3 Mail Send API.

The credential decides the transport: an ``smtp`` credential sends through the
organization's SMTP server, a ``sendgrid_api_key`` credential through SendGrid
(``POTAFLOW_SENDGRID_API_URL``). The ``sendgrid`` client library is imported on
first use, so processes that never send through SendGrid do not carry it.
"""

import base64
import json
import smtplib
import socket
import ssl
import time
import urllib.error
from collections.abc import Mapping
from email import encoders
from email.mime.base import MIMEBase
from email.utils import make_msgid
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend

from integrations import errors, net
from integrations.base import Action, ActionContext, PreviewCredential, preview_row
from integrations.errors import PermanentError, RetryableError
from integrations.file_access import FileInfo
from integrations.storable import JSONValue

from .credentials import SENDGRID_API_KEY, SMTP

_ADDRESSES_SCHEMA = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
    ]
}


def addresses(value: Any) -> list[str]:
    """The addresses of a rendered ``to``/``cc``/``bcc``/``reply_to``: a list, or a comma-separated string."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


class PinnedSMTPBackend(EmailBackend):
    """Django's SMTP backend, with two changes.

    - It connects to the address the SSRF guard checked (``pinned_address``)
      while keeping the host name for TLS (SNI and certificate checks).
    - STARTTLS/SSL verify the server certificate against the system CA store
      (``ssl.create_default_context``; ``SSL_CERT_FILE`` adds a private CA).
      Django's default context does not verify.
    """

    def __init__(self, *, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pinned_address = pinned_address

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context()

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        base = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
        address = self.pinned_address

        class Pinned(base):  # type: ignore[valid-type, misc]
            def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
                sock: socket.socket = super()._get_socket(address, port, timeout)
                return sock

        return Pinned


class SendEmail(Action):
    name = "email.send"
    title = "Send email"
    description = "Send an email through an SMTP server or SendGrid (chosen by the credential)."
    credential_kind = (SMTP.kind, SENDGRID_API_KEY.kind)
    credential_required = True
    config_schema = {
        "type": "object",
        "required": ["to", "subject"],
        "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
        "additionalProperties": False,
        "properties": {
            "to": _ADDRESSES_SCHEMA,
            "cc": _ADDRESSES_SCHEMA,
            "bcc": _ADDRESSES_SCHEMA,
            "reply_to": _ADDRESSES_SCHEMA,
            "from_email": {"type": "string", "description": "Overrides the credential's from address."},
            "subject": {"type": "string", "minLength": 1},
            "text": {"type": "string"},
            "html": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "attachments": {
                "type": "array",
                "items": {"type": ["object", "string"]},
                "description": "Files to attach: a list of file references ({{ trigger.files.<field> }}), "
                "at most POTAFLOW_SEND_FILE_MAX_BYTES together",
            },
        },
    }

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        # A repeat carries the same Message-ID, which mail systems use to drop duplicates.
        return True

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """The message: recipients, sender (the credential's when the step sets none), subject, text."""
        sender = config.get("from_email") or (credential.public_data.get("from_email") if credential else None)
        return {
            "kind": "email",
            "to": config.get("to"),
            "cc": config.get("cc"),
            "bcc": config.get("bcc"),
            "from": sender,
            "subject": config.get("subject"),
            "text": config.get("text"),
            "html": config.get("html"),
            "rows": [
                preview_row("To", config.get("to")),
                preview_row("Cc", config.get("cc") or ""),
                preview_row("From", sender or "(the credential's)"),
                preview_row("Subject", config.get("subject")),
            ],
            "body": config.get("text") or config.get("html") or "",
        }

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"to": [*addresses(config.get("to"))], "subject": config.get("subject")}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
        if not ctx.credential:
            raise PermanentError("email.send needs an smtp or sendgrid_api_key credential")
        to = addresses(config.get("to"))
        if not to:
            raise PermanentError("config.to: no recipient after rendering")
        from_email = config.get("from_email") or ctx.credential.get("from_email")
        if not from_email:
            raise PermanentError("no from address: set config.from_email or the credential's from_email")
        message = {
            "to": to,
            "cc": addresses(config.get("cc")),
            "bcc": addresses(config.get("bcc")),
            "reply_to": addresses(config.get("reply_to")),
            "from_email": from_email,
            "subject": config["subject"],
            "text": config.get("text") or "",
            "html": config.get("html") or "",
            "headers": dict(config.get("headers") or {}),
        }
        domain = from_email.rsplit("@", 1)[-1].strip(">") or "potaflow.local"
        message["message_id"] = stable_message_id(ctx.idempotency_key, domain)
        message["attachments"] = _attachments(config.get("attachments"), ctx)
        if not (message["text"] or message["html"]):
            raise PermanentError("config.text / config.html: the message has no body after rendering")
        if ctx.credential_kind == SENDGRID_API_KEY.kind:
            return _send_sendgrid(message, ctx)
        if ctx.credential_kind == SMTP.kind:
            return _send_smtp(message, ctx)
        raise PermanentError(f"email.send cannot use a {ctx.credential_kind} credential")


# -- SMTP --------------------------------------------------------------------
def _send_smtp(message: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
    cred = ctx.credential or {}
    host, port = cred["host"], int(cred["port"])
    try:
        address = net.pinned_address(host, port)
    except net.BlockedDestination as exc:
        raise PermanentError(f"SMTP server {exc}; nothing was sent") from None
    except net.ResolutionError as exc:
        raise errors.from_resolution(f"SMTP server: {exc}", temporary=exc.temporary) from None
    security = cred.get("security", "starttls")
    backend = PinnedSMTPBackend(
        pinned_address=str(address),
        host=host,
        port=port,
        username=cred.get("username") or "",
        password=cred.get("password") or "",
        use_tls=security == "starttls",
        use_ssl=security == "ssl",
        timeout=ctx.timeout_seconds,
        fail_silently=False,
    )
    message_id = message["message_id"]
    email = EmailMultiAlternatives(
        subject=message["subject"],
        body=message["text"] or message["html"],
        from_email=message["from_email"],
        to=message["to"],
        cc=message["cc"],
        bcc=message["bcc"],
        reply_to=message["reply_to"],
        headers={**message["headers"], "Message-ID": message_id},
        connection=backend,
    )
    if message["text"] and message["html"]:
        email.attach_alternative(message["html"], "text/html")
    elif message["html"]:
        email.content_subtype = "html"
    for info, data in message["attachments"]:
        email.attach(_mime_attachment(info, data))
    where = f"SMTP {host}:{port}"
    try:
        email.send()
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"{where} authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{rcpt} ({code} {_text(msg)})" for rcpt, (code, msg) in exc.recipients.items())
        raise PermanentError(f"{where} refused the recipients: {refused}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc} (check the credential's security setting)") from None
    except smtplib.SMTPResponseException as exc:
        text = f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            raise RetryableError(text) from None
        raise PermanentError(text) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"{where}: TLS certificate not trusted ({exc.verify_message})") from None
    except ssl.SSLError as exc:
        raise PermanentError(f"{where}: TLS error ({exc})") from None
    except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections
        raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from None
    return {
        "provider": "smtp",
        "message_id": message_id,
        "from": message["from_email"],
        "to": message["to"],
        "cc": message["cc"],
        "bcc_count": len(message["bcc"]),
        "subject": message["subject"],
        "attachments": _attachment_refs(message),
    }


def _attachments(value: Any, ctx: ActionContext) -> list[tuple[FileInfo, bytes]]:
    """The rendered ``attachments`` (a list of file references) read within POTAFLOW_SEND_FILE_MAX_BYTES together."""
    if value in (None, "", []):
        return []
    refs = value if isinstance(value, list) else [value]
    if ctx.files is None:
        raise PermanentError("this step runs without access to files")
    budget = settings.POTAFLOW_SEND_FILE_MAX_BYTES
    attached = []
    for index, ref in enumerate(refs):
        info, data = ctx.files.read(ref, field=f"config.attachments[{index}]", limit=budget,
                                    setting="POTAFLOW_SEND_FILE_MAX_BYTES (all attachments together)")  # fmt: skip
        budget -= len(data)
        attached.append((info, data))
    return attached


def _mime_attachment(info: FileInfo, data: bytes) -> MIMEBase:
    """The file as a base64 part whatever its type: a text/* part would have its line endings
    rewritten on the way (CRLF), and an attachment must arrive byte for byte."""
    maintype, _, subtype = (info.content_type or "application/octet-stream").partition("/")
    if not (maintype and subtype) or any(c in maintype + subtype for c in "\r\n;"):
        maintype, subtype = "application", "octet-stream"
    part = MIMEBase(maintype, subtype.strip())
    part.set_payload(data)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=info.name)
    return part


def _attachment_refs(message: dict[str, Any]) -> list[JSONValue]:
    return [info.as_ref() for info, _data in message["attachments"]]


def stable_message_id(idempotency_key: str, domain: str) -> str:
    """The same Message-ID for every attempt of one step of one run (a fresh one without a key)."""
    if not idempotency_key:
        return make_msgid(domain=domain)
    local = "".join(c if c.isalnum() or c in ".-" else "." for c in idempotency_key)
    return f"<{local}@{domain}>"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- SendGrid -----------------------------------------------------------------
def sendgrid_body(message: dict[str, Any]) -> dict[str, Any]:
    """The v3 Mail Send JSON (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send)."""
    personalization: dict[str, Any] = {"to": [{"email": a} for a in message["to"]]}
    if message["cc"]:
        personalization["cc"] = [{"email": a} for a in message["cc"]]
    if message["bcc"]:
        personalization["bcc"] = [{"email": a} for a in message["bcc"]]
    content = []
    if message["text"]:
        content.append({"type": "text/plain", "value": message["text"]})
    if message["html"]:
        content.append({"type": "text/html", "value": message["html"]})
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": {"email": message["from_email"]},
        "subject": message["subject"],
        "content": content,
    }
    if message["reply_to"]:
        if len(message["reply_to"]) == 1:
            body["reply_to"] = {"email": message["reply_to"][0]}
        else:
            body["reply_to_list"] = [{"email": a} for a in message["reply_to"]]
    headers = dict(message["headers"])
    if message.get("message_id"):
        headers["Message-ID"] = message["message_id"]
        # Also as a custom arg: SendGrid's event webhook reports it, whatever Message-ID it keeps.
        body["custom_args"] = {"potaflow_message_id": message["message_id"]}
    if headers:
        body["headers"] = headers
    if message.get("attachments"):
        body["attachments"] = [
            {
                "content": base64.b64encode(data).decode(),
                "filename": info.name,
                "type": info.content_type or "application/octet-stream",
                "disposition": "attachment",
            }
            for info, data in message["attachments"]
        ]
    return body


def _send_sendgrid(message: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
    # deferred: keeps idle memory down (sendgrid loads only in a process that sends through it)
    from python_http_client import exceptions as sg_errors
    from sendgrid import SendGridAPIClient

    client = SendGridAPIClient(api_key=(ctx.credential or {})["api_key"], host=settings.POTAFLOW_SENDGRID_API_URL)
    client.client.timeout = ctx.timeout_seconds
    try:
        response = client.send(sendgrid_body(message))
    except sg_errors.HTTPError as exc:
        detail = _sendgrid_errors(exc.body)
        text = f"SendGrid answered {exc.status_code}: {detail}"
        headers = exc.headers or {}
        retry_after = errors.parse_retry_after(headers.get("Retry-After"))
        reset = headers.get("X-RateLimit-Reset")  # SendGrid's 429: the epoch second the limit resets
        if retry_after is None and reset and reset.isdigit():
            retry_after = max(0.0, int(reset) - time.time())
        raise errors.from_status(exc.status_code, text, retry_after=retry_after) from None
    except (urllib.error.URLError, OSError) as exc:
        raise RetryableError(f"SendGrid unreachable: {exc}") from None
    return {
        "provider": "sendgrid",
        "status": response.status_code,
        "message_id": message["message_id"],
        "sendgrid_message_id": response.headers.get("X-Message-Id"),
        "from": message["from_email"],
        "to": message["to"],
        "cc": message["cc"],
        "bcc_count": len(message["bcc"]),
        "subject": message["subject"],
        "attachments": _attachment_refs(message),
    }


def _sendgrid_errors(body: bytes | str | None) -> str:
    """SendGrid's error list as one line: "message (field: x); ...", or the raw body (cut) when
    it is not the documented ``{"errors": [{"message", "field"}]}``."""
    raw = _text(body or b"")[:300]
    try:
        errors = json.loads(body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        return raw
    if not isinstance(errors, list):
        return raw
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        field = error.get("field")
        parts.append(f"{error.get('message')} (field: {field})" if field else str(error.get("message")))
    return "; ".join(parts) or raw
