# Personas (owner, admin, editor, viewer in Acme; an outsider owning Globex) from the accounts tests.
from accounts.tests.conftest import World, client_for, make_user, world  # noqa: E402, F401, I001
from integrations.tests.support import allow_loopback, fake_dns, fernet_keys, no_exceptions, organization  # noqa: F401
