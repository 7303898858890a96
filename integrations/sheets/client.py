"""How ``sheets.append_row`` talks to Google: gspread and google-auth, behind the SSRF guard.

Imported by the action on first use only (the libraries weigh tens of MiB).

Google's API base URLs come from settings (``POTAFLOW_GOOGLE_SHEETS_API_URL``,
``POTAFLOW_GOOGLE_DRIVE_API_URL``): gspread binds its URL constants at
import time, so ``PotaflowHTTPClient`` rewrites the default prefixes on each
request instead of patching the library's module globals.

Every request, the OAuth token exchange at the key file's ``token_uri`` (user
input) as much as the Sheets/Drive calls, goes through
``integrations.guarded_requests.guarded_session``: each request and each redirect hop is
checked against the SSRF policy and connected to the checked address. The
API base URLs are set by the operator, but they pass the same guard: one that
points at a private address (an emulator, a proxy) must be listed in
``POTAFLOW_ALLOW_PRIVATE_DESTINATIONS``.
"""

import urllib.parse
from typing import Any

import gspread
import requests
from django.conf import settings
from google.auth import exceptions as google_errors
from google.auth.transport.requests import AuthorizedSession
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2.credentials import Credentials as UserCredentials
from google.oauth2.service_account import Credentials as ServiceAccountCredentials
from gspread import urls as gspread_urls
from gspread.http_client import HTTPClient

from integrations import errors, guarded_requests, net
from integrations.base import ActionContext
from integrations.errors import PermanentError, RetryableError
from integrations.storable import JSONValue, storable

SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]
_NOT_AN_OBJECT = "Google answered HTTP 200 with a body that is not the JSON object the API documents"


class PotaflowHTTPClient(HTTPClient):
    """gspread's HTTP client with the Google API base URLs taken from settings."""

    def request(self, method: str, endpoint: str, *args: Any, **kwargs: Any) -> requests.Response:
        rebased = (
            (gspread_urls.SPREADSHEETS_API_V4_BASE_URL, settings.POTAFLOW_GOOGLE_SHEETS_API_URL),
            (gspread_urls.DRIVE_FILES_API_V3_URL, settings.POTAFLOW_GOOGLE_DRIVE_API_URL),
        )
        for default, configured in rebased:
            if endpoint.startswith(default):
                endpoint = configured.rstrip("/") + endpoint[len(default) :]
                break
        return super().request(method, endpoint, *args, **kwargs)


def spreadsheet_key(value: str) -> str:
    """A spreadsheet key, from the key itself or a docs.google.com URL."""
    value = value.strip()
    if value.startswith(("http://", "https://")):
        try:
            return gspread.utils.extract_id_from_url(value)
        except gspread.exceptions.NoValidUrlKeyFound:
            raise PermanentError(f"config.spreadsheet: no spreadsheet key in URL {value!r}") from None
    return value


class _Unauthorized(Exception):  # noqa: N818 - a signal: the connection's token was refused (401)
    pass


def append_row(config: dict[str, Any], ctx: ActionContext) -> dict[str, JSONValue]:
    """Append ``config["rows"]`` as the service account or the connected Google account; the step's output.

    A connection's token refused with a 401 is refreshed once (single-flight,
    ``ctx.connection``) and the call made once more.
    """
    cred = ctx.credential or {}
    if ctx.connection is not None:
        account = str(cred.get("account") or "the connected Google account")
        token = ctx.connection.access_token
        try:
            return _append(config, ctx, UserCredentials(token), who=account, connection=True)  # type: ignore[no-untyped-call]  # google-auth leaves it unannotated
        except _Unauthorized:
            token = ctx.connection.refreshed_after(token)
        try:
            return _append(config, ctx, UserCredentials(token), who=account, connection=True)  # type: ignore[no-untyped-call]  # as above
        except _Unauthorized:
            raise PermanentError("Google refused the connection's freshly refreshed token (401)") from None
    key_info = cred.get("key")
    if not key_info:
        raise PermanentError("sheets.append_row needs a google_service_account credential or a Google connection")
    _check_token_uri(key_info.get("token_uri", ""))
    try:
        credentials = ServiceAccountCredentials.from_service_account_info(  # type: ignore[no-untyped-call]  # google-auth leaves it unannotated
            key_info, scopes=SCOPES
        )
    except (ValueError, KeyError) as exc:
        raise PermanentError(f"the service-account key is unusable: {exc}") from None
    return _append(config, ctx, credentials, who=key_info.get("client_email", "?"), connection=False)


def _append(
    config: dict[str, Any], ctx: ActionContext, credentials: Any, *, who: str, connection: bool
) -> dict[str, JSONValue]:
    key = spreadsheet_key(config["spreadsheet"])
    rows = config["rows"]  # made safe by the action (formulas from untrusted input are text)
    option = config.get("value_input_option") or "RAW"
    client_email = who
    allow = net.current_allow_list()
    session = AuthorizedSession(  # type: ignore[no-untyped-call]  # google-auth leaves it unannotated
        credentials,
        auth_request=GoogleAuthRequest(guarded_requests.guarded_session(allow=allow)),
        refresh_timeout=ctx.timeout_seconds,
        # A connection's token is refreshed by integrations.oauth (single-flight), never by google-auth.
        refresh_status_codes=() if connection else (401,),
    )
    guarded_requests.guarded_session(allow=allow, session=session)
    client = gspread.Client(auth=credentials, session=session, http_client=PotaflowHTTPClient)
    client.http_client.set_timeout(ctx.timeout_seconds)
    try:
        spreadsheet = client.open_by_key(key)
        title = config.get("worksheet")
        worksheet = spreadsheet.worksheet(title) if title else spreadsheet.get_worksheet(0)
        if worksheet is None:
            raise PermanentError(f"spreadsheet {key} has no worksheet")
        result = worksheet.append_rows(
            rows,
            # A template may render any string; Google answers an unknown option with a 400.
            value_input_option=option,  # type: ignore[arg-type]  # gspread's StrEnum; its values are these strings
            insert_data_option=gspread.utils.InsertDataOption.insert_rows,
        )
    except gspread.exceptions.WorksheetNotFound:
        titles = ", ".join(repr(w.title) for w in spreadsheet.worksheets())
        raise PermanentError(f"worksheet {title!r} not found in spreadsheet {key} (worksheets: {titles})") from None
    except gspread.exceptions.SpreadsheetNotFound:
        raise PermanentError(f"spreadsheet {key} does not exist (Google answered 404)") from None
    except PermissionError:  # gspread turns the 403 of open_by_key into this
        raise PermanentError(_not_shared(key, client_email, connection)) from None
    except gspread.exceptions.APIError as exc:
        if connection and exc.response.status_code == 401:
            raise _Unauthorized() from None
        raise _classify(exc, key, client_email, connection) from None
    except google_errors.RefreshError as exc:
        if getattr(exc, "retryable", False):
            raise RetryableError(f"Google token exchange failed: {exc}") from None
        if str(exc.args[0] if exc.args else "").startswith("No access token"):
            raise RetryableError(f"{_stage(credentials)}: the answer (HTTP 200) has no access_token") from None
        raise PermanentError(f"Google refused the service-account key: {exc}") from None
    except net.BlockedDestination as exc:
        raise PermanentError(f"{_stage(credentials)}: {exc}; that request was not sent") from None
    except net.ResolutionError as exc:
        raise errors.from_resolution(f"{_stage(credentials)}: {exc}", temporary=exc.temporary) from None
    except requests.JSONDecodeError:
        raise RetryableError(f"{_stage(credentials)}: {_NOT_AN_OBJECT}") from None
    except (google_errors.TransportError, requests.RequestException) as exc:
        cause = exc.__cause__ if isinstance(exc, google_errors.TransportError) else exc
        if isinstance(cause, requests.TooManyRedirects):
            raise PermanentError(f"{_stage(credentials)}: {cause}") from None
        raise RetryableError(f"Google unreachable ({_stage(credentials)}): {exc}") from None
    except (TypeError, KeyError) as exc:
        if credentials.token is not None:
            raise
        # google-auth indexes the token answer as a dict: HTML or a JSON list/string gets here
        raise RetryableError(f"{_stage(credentials)}: {_NOT_AN_OBJECT} ({exc})") from None
    if not isinstance(result, dict):
        raise RetryableError(f"{_stage(credentials)} (values:append): {_NOT_AN_OBJECT}")
    updates = result.get("updates")
    if not isinstance(updates, dict):
        updates = {}
    output: dict[str, JSONValue] = storable(
        {
            "spreadsheet_id": key,
            "worksheet": worksheet.title,
            "updated_range": updates.get("updatedRange"),
            "updated_rows": updates.get("updatedRows"),
            "updated_cells": updates.get("updatedCells"),
        }
    )
    return output


def _not_shared(key: str, client_email: str, connection: bool = False) -> str:
    if connection:
        return f"spreadsheet {key}: permission denied (403): {client_email} cannot edit it (share it with that account)"
    return (
        f"spreadsheet {key}: permission denied (403): the sheet is not shared with the service account "
        f"{client_email} (share it with that address as an editor)"
    )


def _classify(exc: gspread.exceptions.APIError, key: str, client_email: str, connection: bool) -> Exception:
    status = exc.response.status_code
    message = exc.error.get("message", "") if isinstance(exc.error, dict) else str(exc)
    if status == 403:
        return PermanentError(_not_shared(key, client_email, connection), status=status)
    if status == 404:
        return PermanentError(f"spreadsheet {key} does not exist (Google answered 404)", status=status)
    retry_after = errors.parse_retry_after(exc.response.headers.get("Retry-After"))
    return errors.from_status(status, f"Google Sheets answered {status}: {message}", retry_after=retry_after)


def _stage(credentials: ServiceAccountCredentials) -> str:
    """Which call failed: without a token yet, it was the exchange at the key's token_uri."""
    if credentials.token is None:
        return "the OAuth token exchange at the service-account key's token_uri"
    return "the Google Sheets API call"


def _check_token_uri(token_uri: str) -> None:
    # Only the shape here: the address is checked when the request is made (guarded_requests.GuardedAdapter),
    # resolving once, so a second DNS answer cannot differ from the checked one.
    parts = urllib.parse.urlsplit(token_uri)
    try:
        ok = parts.scheme in ("https", "http") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise PermanentError(f"the service-account key's token_uri is not a URL: {token_uri!r}")
