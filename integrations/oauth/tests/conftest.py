# Personas (owner, admin, editor, viewer in Acme; an outsider owning Globex) from the accounts tests.
from accounts.tests.conftest import World, client_for, make_user, world  # noqa: F401
from integrations.oauth.tests.support import (  # noqa: F401
    google_app,
    oauth_app,
    pages,
    slack_app,
)
from integrations.tests.support import allow_loopback, fake_dns, fernet_keys, no_exceptions, organization  # noqa: F401
