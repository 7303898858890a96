"""Webhook signature schemes: how a workflow checks that an event comes from its sender.

A workflow with a ``webhook_secret`` picks a ``signature_scheme``:

- ``standard`` — Standard Webhooks (https://www.standardwebhooks.com/):
  ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
  HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (several space-separated). A
  secret written ``whsec_<base64>`` is base64-decoded; any other is UTF-8 bytes.
- ``github`` — ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
- ``stripe`` — ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{body}">``
  (several ``v1`` allowed).
- ``slack`` — ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{ts}:{body}">``
  with ``X-Slack-Request-Timestamp: <ts>``.
- ``hmac`` — generic: a header of your choice holding ``<prefix><digest>`` of
  the body, SHA-256 or SHA-1, hex or base64.

Timestamped schemes (standard, stripe, slack) refuse messages more than
``SIGNATURE_TOLERANCE_SECONDS`` away from the server clock. Verification is
over the raw bytes, with ``hmac.compare_digest``; both the current secret and
``webhook_secret_previous`` are tried, so a sender can be moved to a new
secret without dropping events. ``verify`` returns the **delivery key**: the
signed delivery id (Standard Webhooks' ``webhook-id``) or, for schemes whose
id header is not signed, a digest of the signed message. The view uses it as
the idempotency key, so a captured message replayed with a fresh
``Idempotency-Key`` header is the same event, never a new run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models

SIGNATURE_TOLERANCE_SECONDS = 300


class SignatureScheme(models.TextChoices):
    STANDARD = "standard", "Standard Webhooks"
    GITHUB = "github", "GitHub (X-Hub-Signature-256)"
    STRIPE = "stripe", "Stripe (Stripe-Signature)"
    SLACK = "slack", "Slack (X-Slack-Signature)"
    HMAC = "hmac", "Generic HMAC header"


class HmacAlgorithm(models.TextChoices):
    SHA256 = "sha256", "SHA-256"
    SHA1 = "sha1", "SHA-1"


class HmacEncoding(models.TextChoices):
    HEX = "hex", "hex"
    BASE64 = "base64", "base64"


# The workflow fields this module reads (services and the API list them with the others).
SIGNING_FIELDS = (
    "signature_scheme",
    "webhook_secret_previous",
    "hmac_header",
    "hmac_algorithm",
    "hmac_encoding",
    "hmac_prefix",
)
MIN_SECRET_LENGTH = 16


class SignatureInvalid(Exception):  # noqa: N818 - a refusal, named after what the sender sees
    """The request is not signed as the workflow requires; ``message`` names the failed check."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Signing:
    """A workflow's signing configuration (``Signing.of(workflow)``)."""

    scheme: str
    secrets: tuple[str, ...]
    hmac_header: str = ""
    hmac_algorithm: str = HmacAlgorithm.SHA256
    hmac_encoding: str = HmacEncoding.HEX
    hmac_prefix: str = ""

    @classmethod
    def of(cls, workflow: Any) -> Signing:
        return cls(
            scheme=workflow.signature_scheme or SignatureScheme.STANDARD,
            secrets=tuple(s for s in (workflow.webhook_secret, workflow.webhook_secret_previous) if s),
            hmac_header=workflow.hmac_header,
            hmac_algorithm=workflow.hmac_algorithm or HmacAlgorithm.SHA256,
            hmac_encoding=workflow.hmac_encoding or HmacEncoding.HEX,
            hmac_prefix=workflow.hmac_prefix,
        )


def verify(signing: Signing, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
    """Check the request; return its delivery key or raise ``SignatureInvalid``."""
    now = time.time() if now is None else now
    try:
        check = _VERIFIERS[signing.scheme]
    except KeyError:
        raise SignatureInvalid(f"unknown signature scheme {signing.scheme!r}") from None
    return check(signing, headers, body, now)


def validate(values: Mapping[str, Any]) -> dict[str, str]:
    """Problems with a signing configuration, keyed by field (empty when fine)."""
    errors: dict[str, str] = {}
    scheme = values.get("signature_scheme") or SignatureScheme.STANDARD
    if scheme not in SignatureScheme.values:
        errors["signature_scheme"] = f"{scheme!r} is not one of {', '.join(SignatureScheme.values)}."
    for field in ("webhook_secret", "webhook_secret_previous"):
        secret = values.get(field) or ""
        if secret and len(secret) < MIN_SECRET_LENGTH:
            errors[field] = f"A webhook secret must be at least {MIN_SECRET_LENGTH} characters long."
    if values.get("webhook_secret_previous") and not values.get("webhook_secret"):
        errors["webhook_secret_previous"] = "A previous secret needs a current webhook_secret."  # noqa: S105
    if scheme == SignatureScheme.HMAC:
        header = (values.get("hmac_header") or "").strip()
        if not header:
            errors["hmac_header"] = "The hmac scheme needs the name of the header that carries the signature."
        elif not all(c.isascii() and (c.isalnum() or c == "-") for c in header):
            # Servers drop headers with "_" (they would be confused with "-"): such a header never arrives.
            errors["hmac_header"] = "A header name has only letters, digits and '-'."
    if (values.get("hmac_algorithm") or HmacAlgorithm.SHA256) not in HmacAlgorithm.values:
        errors["hmac_algorithm"] = f"hmac_algorithm must be one of {', '.join(HmacAlgorithm.values)}."
    if (values.get("hmac_encoding") or HmacEncoding.HEX) not in HmacEncoding.values:
        errors["hmac_encoding"] = f"hmac_encoding must be one of {', '.join(HmacEncoding.values)}."
    return errors


# -- helpers -------------------------------------------------------------------------
def secret_bytes(secret: str) -> bytes:
    """Standard Webhooks: ``whsec_<base64>`` is decoded; anything else is used as UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def _digest_key(message: bytes) -> str:
    """A delivery key for schemes whose id header is not signed: the signed message's digest."""
    return "sha256:" + hashlib.sha256(message).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureInvalid(f"the {name} header is missing")
    return value.strip()


def _timestamp(value: str, name: str, now: float) -> int:
    try:
        ts = int(value)
    except ValueError:
        raise SignatureInvalid(f"{name} is not a Unix timestamp") from None
    if abs(now - ts) > SIGNATURE_TOLERANCE_SECONDS:
        raise SignatureInvalid(f"{name} is more than {SIGNATURE_TOLERANCE_SECONDS} s away from the server time")
    return ts


def _matches(candidates: list[bytes], expected: list[bytes]) -> bool:
    # Every comparison runs (no early exit on the first secret), each in constant time.
    found = False
    for candidate in candidates:
        for want in expected:
            found |= hmac.compare_digest(candidate, want)
    return found


def _hex(value: str) -> bytes:
    return value.strip().lower().encode()


# -- schemes -------------------------------------------------------------------------
def _standard(signing: Signing, headers: Mapping[str, str], body: bytes, now: float) -> str:
    msg_id, timestamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and timestamp and signatures):
        raise SignatureInvalid("webhook-id, webhook-timestamp and webhook-signature headers are required")
    _timestamp(timestamp, "webhook-timestamp", now)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = [base64.b64encode(_mac(secret_bytes(s), signed)) for s in signing.secrets]
    candidates = [
        value.encode() for version, _, value in (c.partition(",") for c in signatures.split()) if version == "v1"
    ]
    if not _matches(candidates, expected):
        raise SignatureInvalid("webhook-signature: no v1 signature matches the body")
    return msg_id


def _github(signing: Signing, headers: Mapping[str, str], body: bytes, now: float) -> str:
    value = _header(headers, "X-Hub-Signature-256")
    if not value.startswith("sha256="):
        raise SignatureInvalid("X-Hub-Signature-256 does not start with sha256=")
    expected = [_mac(s.encode(), body).hex().encode() for s in signing.secrets]
    if not _matches([_hex(value.removeprefix("sha256="))], expected):
        raise SignatureInvalid("X-Hub-Signature-256 does not match the body")
    return _digest_key(b"github:" + body)


def _stripe(signing: Signing, headers: Mapping[str, str], body: bytes, now: float) -> str:
    value = _header(headers, "Stripe-Signature")
    pairs = [part.strip().partition("=") for part in value.split(",")]
    timestamps = [v for k, _, v in pairs if k == "t"]
    candidates = [_hex(v) for k, _, v in pairs if k == "v1"]
    if len(timestamps) != 1 or not candidates:
        raise SignatureInvalid("Stripe-Signature must hold one t= and at least one v1= signature")
    _timestamp(timestamps[0], "Stripe-Signature t", now)
    signed = timestamps[0].encode() + b"." + body
    expected = [_mac(s.encode(), signed).hex().encode() for s in signing.secrets]
    if not _matches(candidates, expected):
        raise SignatureInvalid("Stripe-Signature: no v1 signature matches the body")
    return _digest_key(b"stripe:" + signed)


def _slack(signing: Signing, headers: Mapping[str, str], body: bytes, now: float) -> str:
    timestamp = _header(headers, "X-Slack-Request-Timestamp")
    value = _header(headers, "X-Slack-Signature")
    _timestamp(timestamp, "X-Slack-Request-Timestamp", now)
    if not value.startswith("v0="):
        raise SignatureInvalid("X-Slack-Signature does not start with v0=")
    signed = f"v0:{timestamp}:".encode() + body
    expected = [_mac(s.encode(), signed).hex().encode() for s in signing.secrets]
    if not _matches([_hex(value.removeprefix("v0="))], expected):
        raise SignatureInvalid("X-Slack-Signature does not match the body")
    return _digest_key(b"slack:" + signed)


def _generic(signing: Signing, headers: Mapping[str, str], body: bytes, now: float) -> str:
    name = signing.hmac_header
    value = _header(headers, name)
    if signing.hmac_prefix:
        if not value.startswith(signing.hmac_prefix):
            raise SignatureInvalid(f"{name} does not start with {signing.hmac_prefix}")
        value = value.removeprefix(signing.hmac_prefix)
    digests = [_mac(s.encode(), body, signing.hmac_algorithm) for s in signing.secrets]
    if signing.hmac_encoding == HmacEncoding.BASE64:
        expected = [base64.b64encode(d) for d in digests]
        candidate = value.strip().encode()
    else:
        expected = [d.hex().encode() for d in digests]
        candidate = _hex(value)
    if not _matches([candidate], expected):
        raise SignatureInvalid(f"{name} does not match the body")
    return _digest_key(b"hmac:" + body)


_VERIFIERS: dict[str, Callable[[Signing, Mapping[str, str], bytes, float], str]] = {
    SignatureScheme.STANDARD: _standard,
    SignatureScheme.GITHUB: _github,
    SignatureScheme.STRIPE: _stripe,
    SignatureScheme.SLACK: _slack,
    SignatureScheme.HMAC: _generic,
}
