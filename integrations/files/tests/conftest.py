from integrations.tests.support import allow_loopback, fake_dns, fernet_keys, no_exceptions, organization  # noqa: F401
