"""``sheets.append_row``: append a row to a Google Sheet as a service account or a connected
Google account (gspread)."""

from .action import AppendRow
from .credentials import GOOGLE_OAUTH, GOOGLE_SERVICE_ACCOUNT

ACTIONS = (AppendRow,)
CREDENTIAL_KINDS = (GOOGLE_SERVICE_ACCOUNT, GOOGLE_OAUTH)
