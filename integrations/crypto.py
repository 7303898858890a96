"""Encryption at rest for credential secrets (Fernet / MultiFernet).

Keys come from ``settings.POTAFLOW_FERNET_KEYS`` (comma-separated in the
environment): the FIRST key encrypts, every key decrypts. To rotate, put a new
key first, keep the old ones after it, run ``manage.py rotate_credential_keys``
and then drop the old keys.

With no key configured and ``DEBUG`` on, a development key is derived from
``SECRET_KEY`` (SHA-256, urlsafe base64) so a bare checkout works. With
``DEBUG`` off that is refused: system check ``integrations.E001`` fails and
any encryption raises ``ImproperlyConfigured``.
"""

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretDecryptionError(Exception):
    """The ciphertext was written with a key that is not configured any more."""


def development_key(secret_key: str) -> bytes:
    """The DEBUG-only fallback key: derived from SECRET_KEY so it is stable across restarts."""
    digest = hashlib.sha256(f"potaflow-credentials:{secret_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest)


def configured_keys() -> list[bytes]:
    """The Fernet keys in order (first encrypts). Raises ImproperlyConfigured when unusable."""
    raw = [k.strip() for k in getattr(settings, "POTAFLOW_FERNET_KEYS", []) if k and k.strip()]
    if not raw:
        if settings.DEBUG:
            return [development_key(settings.SECRET_KEY)]
        raise ImproperlyConfigured(
            "POTAFLOW_FERNET_KEYS is empty: credential secrets cannot be encrypted. Generate a key with "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" '
            "and export POTAFLOW_FERNET_KEYS=<key>."
        )
    keys = []
    for index, key in enumerate(raw):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"POTAFLOW_FERNET_KEYS entry #{index + 1} is not a valid Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
        keys.append(key.encode())
    return keys


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(k) for k in configured_keys()])


def encrypt_json(data: dict[str, Any]) -> str:
    return _fernet().encrypt(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    try:
        plain = _fernet().decrypt(token.encode())
    except InvalidToken:
        raise SecretDecryptionError(
            "credential secret cannot be decrypted with the configured POTAFLOW_FERNET_KEYS "
            "(was a key removed before running rotate_credential_keys?)"
        ) from None
    data: dict[str, Any] = json.loads(plain)  # always an object: encrypt_json's input
    return data


def rotate(token: str) -> str:
    """Re-encrypt ``token`` with the first key (MultiFernet.rotate keeps the timestamp)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("credential secret cannot be decrypted with the configured keys") from None
