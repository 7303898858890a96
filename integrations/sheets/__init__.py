"""``sheets.append_row``: append a row to a Google Sheet as a service account (gspread)."""

from .action import AppendRow
from .credentials import GOOGLE_SERVICE_ACCOUNT

ACTIONS = (AppendRow,)
CREDENTIAL_KINDS = (GOOGLE_SERVICE_ACCOUNT,)
