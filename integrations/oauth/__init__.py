"""Connections: credentials obtained through OAuth 2.0 (Authlib) instead of typed in.

The shared machinery of the connection kinds (``slack_oauth`` in ``slack/``,
``google_oauth`` in ``sheets/`` and the generic ``oauth2`` here):
``providers`` (what a kind says about its provider), ``client`` (the OAuth
protocol, all of it Authlib's), ``flow`` (Connect: state, PKCE, callback,
disconnect), ``tokens`` (the tokens a step uses: refresh single-flight under
a row lock, *needs reconnect*), ``models`` (the encrypted tokens and the
pending authorizations), ``selectors`` (status for the API and pages).
"""

from .credentials import OAUTH2

ACTIONS = ()
CREDENTIAL_KINDS = (OAUTH2,)
