"""``http.request``: any HTTP(S) endpoint, behind the SSRF guard, with ``http_*`` credentials."""

from .action import HttpRequest
from .credentials import KINDS

ACTIONS = (HttpRequest,)
CREDENTIAL_KINDS = KINDS
