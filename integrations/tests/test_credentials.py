"""Credential storage: encryption at rest, per-kind validation, key rotation."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.db import connection

from integrations import crypto
from integrations.checks import check_fernet_keys
from integrations.crypto import SecretDecryptionError
from integrations.models import Credential
from integrations.services import credential_create, credential_reveal, credential_secret_markers, credential_update
from testing.network import service_account_key

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    settings.POTAFLOW_FERNET_KEYS = [KEY_A]
    return settings


def raw_column(credential) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_ciphertext FROM integrations_credential WHERE id = %s", [credential.pk])
        return cursor.fetchone()[0]


def test_the_database_column_holds_no_plaintext(keys, organization):
    cred = credential_create(
        organization=organization,
        name="mail",
        kind="smtp",
        secret={"host": "smtp.example.com", "username": "mailer", "password": "hunter2-very-secret",
                "from_email": "robot@example.com"},
    )  # fmt: skip
    stored = raw_column(cred)
    assert "hunter2" not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert cred.public_data == {"host": "smtp.example.com", "port": 587, "username": "mailer",
                                "security": "starttls", "from_email": "robot@example.com"}  # fmt: skip
    assert credential_reveal(Credential.objects.get(pk=cred.pk))["password"] == "hunter2-very-secret"
    assert credential_secret_markers(cred) == {"password": True}


@pytest.mark.parametrize(
    ("kind", "secret", "field"),
    [
        ("http_bearer", {}, "token"),
        ("http_basic", {"username": "a"}, "password"),
        ("http_header", {"value": "v"}, "header_name"),
        ("slack_bot_token", {"token": ""}, "token"),
        ("smtp", {"host": "h", "from_email": "a@b.co", "security": "tls"}, "security"),
        ("smtp", {"host": "h", "from_email": "a@b.co", "port": "smtp"}, "port"),
        ("smtp", {"host": "h", "from_email": "not-an-email"}, "from_email"),
        ("smtp", {"host": "h", "from_email": "a@b.co", "username": "u"}, "password"),
        ("sendgrid_api_key", {"from_email": "a@b.co"}, "api_key"),
        ("google_service_account", {"key": "{not json"}, "key"),
        ("google_service_account", {"key": {"type": "authorized_user"}}, "key"),
        ("http_bearer", {"token": "t", "extra": 1}, "extra"),
    ],
)
def test_each_kind_validates_its_fields_naming_the_field(keys, organization, kind, secret, field):
    with pytest.raises(ValidationError) as exc:
        credential_create(organization=organization, name="c", kind=kind, secret=secret)
    assert field in exc.value.message_dict
    assert not Credential.objects.exists()


def test_an_unknown_kind_is_refused(keys, organization):
    with pytest.raises(ValidationError) as exc:
        credential_create(organization=organization, name="c", kind="ftp", secret={})
    assert "kind" in exc.value.message_dict


def test_a_service_account_key_is_accepted_as_json_text_and_shows_its_email(keys, organization):
    key = service_account_key("http://127.0.0.1:1/token")
    cred = credential_create(organization=organization, name="g", kind="google_service_account",
                             secret={"key": json.dumps(key)})  # fmt: skip
    assert cred.public_data == {"client_email": key["client_email"]}
    assert credential_reveal(cred)["key"]["private_key"] == key["private_key"]
    assert "PRIVATE KEY" not in raw_column(cred)


def test_an_update_keeps_secret_fields_that_are_left_out(keys, organization):
    secret = {"username": "ada", "password": "pw1", "allowed_hosts": ["api.example.com"]}
    cred = credential_create(organization=organization, name="b", kind="http_basic", secret=secret)
    credential_update(credential=cred, name="renamed", secret={"username": "grace"})
    cred.refresh_from_db()
    assert cred.name == "renamed"
    assert credential_reveal(cred) == {"username": "grace", "password": "pw1", "allowed_hosts": ["api.example.com"]}
    credential_update(credential=cred, secret={"password": "pw2"})
    assert credential_reveal(cred) == {"username": "grace", "password": "pw2", "allowed_hosts": ["api.example.com"]}


def test_rotation_re_encrypts_with_the_first_key_and_old_ciphertexts_decrypt_before(settings, organization):
    settings.POTAFLOW_FERNET_KEYS = [KEY_A]
    cred = credential_create(
        organization=organization,
        name="t",
        kind="http_bearer",
        secret={"token": "abc", "allowed_hosts": ["api.example.com"]},
    )
    before = raw_column(cred)
    settings.POTAFLOW_FERNET_KEYS = [KEY_B, KEY_A]  # new key first, old one still decrypts
    assert credential_reveal(cred) == {"token": "abc", "allowed_hosts": ["api.example.com"]}
    call_command("rotate_credential_keys", stdout=open("/dev/null", "w"))  # noqa: SIM115
    after = raw_column(cred)
    assert after != before
    assert Fernet(KEY_B).decrypt(after.encode()) == b'{"token": "abc"}'
    settings.POTAFLOW_FERNET_KEYS = [KEY_B]  # old key dropped: still readable
    cred.refresh_from_db()
    assert credential_reveal(cred) == {"token": "abc", "allowed_hosts": ["api.example.com"]}
    settings.POTAFLOW_FERNET_KEYS = [KEY_A]  # a key that never encrypted it
    with pytest.raises(SecretDecryptionError, match="cannot be decrypted"):
        credential_reveal(cred)


def test_without_keys_debug_derives_a_development_key(settings):
    settings.POTAFLOW_FERNET_KEYS = []
    settings.DEBUG = True
    assert crypto.configured_keys() == [crypto.development_key(settings.SECRET_KEY)]
    assert check_fernet_keys(None) == []


def test_without_keys_production_refuses_with_a_system_check(settings):
    settings.POTAFLOW_FERNET_KEYS = []
    settings.DEBUG = False
    (error,) = check_fernet_keys(None)
    assert error.id == "integrations.E001"
    assert "POTAFLOW_FERNET_KEYS is empty" in error.msg
    with pytest.raises(ImproperlyConfigured):
        crypto.encrypt_json({"a": 1})


def test_a_malformed_key_is_reported(settings):
    settings.POTAFLOW_FERNET_KEYS = [KEY_A, "not-a-key"]
    (error,) = check_fernet_keys(None)
    assert "entry #2" in error.msg
