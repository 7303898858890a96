"""http.request against a real local HTTP server (and the SSRF guard in front of it)."""

import base64
import email.utils
import hashlib
import json
import time

import pytest

from integrations import net
from integrations.errors import ConfigError, PermanentError, RetryableError
from integrations.http.action import HttpRequest
from integrations.tests.support import file_ctx, make_ctx, stored_file
from testing.network import RecordingHTTPServer, Reply, free_port
from workflows.models import RunFile

action = HttpRequest()


def run(config, **ctx):
    return action.run(config, make_ctx(**ctx))


# -- requests as sent ------------------------------------------------------
def test_it_sends_method_path_query_headers_and_bearer_auth(allow_loopback, http_server):
    http_server.route("GET", "/items", Reply(200, {"items": [1, 2]}, {"X-Trace": "abc"}))
    out = run(
        {"url": f"{http_server.url}/items?fixed=1", "query": {"page": 2, "flag": True}, "headers": {"X-Custom": "yes"}},
        credential={"token": "t0k", "allowed_hosts": ["127.0.0.1"]},
        kind="http_bearer",
    )
    (req,) = http_server.requests
    assert req.method == "GET"
    assert req.path == "/items"
    assert req.query == {"fixed": ["1"], "page": ["2"], "flag": ["true"]}
    assert req.headers["x-custom"] == "yes"
    assert req.headers["authorization"] == "Bearer t0k"
    assert req.headers["host"] == f"127.0.0.1:{http_server.port}"
    assert out["status"] == 200
    assert out["body"] == {"items": [1, 2]}
    assert out["headers"]["x-trace"] == "abc"


def test_it_posts_a_json_body(allow_loopback, http_server):
    http_server.route("POST", "/hook", Reply(201, {"id": 7}))
    out = run({"method": "POST", "url": f"{http_server.url}/hook", "body": {"name": "Ada", "n": [1, 2]}})
    (req,) = http_server.requests
    assert req.headers["content-type"] == "application/json"
    assert req.json() == {"name": "Ada", "n": [1, 2]}
    assert out == {"status": 201, "headers": out["headers"], "body": {"id": 7}, "url": f"{http_server.url}/hook"}


def test_it_sends_a_form_body_with_basic_auth(allow_loopback, http_server):
    http_server.route("PUT", "/form", Reply(200, "fine"))
    out = run(
        {"method": "PUT", "url": f"{http_server.url}/form", "body_type": "form", "body": {"a": "1", "b": "x y"}},
        credential={"username": "ada", "password": "p:w", "allowed_hosts": ["127.0.0.1"]},
        kind="http_basic",
    )
    (req,) = http_server.requests
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.form() == {"a": ["1"], "b": ["x y"]}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"ada:p:w").decode()
    assert out["body"] == "fine"


def test_it_sends_a_raw_body_with_a_header_credential(allow_loopback, http_server):
    http_server.route("POST", "/raw", Reply(204))
    out = run(
        {"method": "POST", "url": f"{http_server.url}/raw", "body_type": "raw", "body": "<xml/>",
         "headers": {"Content-Type": "application/xml"}},
        credential={"header_name": "X-Api-Key", "value": "k-123", "allowed_hosts": ["127.0.0.1"]},
        kind="http_header",
    )  # fmt: skip
    (req,) = http_server.requests
    assert req.body == b"<xml/>"
    assert req.headers["content-type"] == "application/xml"
    assert req.headers["x-api-key"] == "k-123"
    assert out["status"] == 204
    assert out["body"] == ""


def test_a_large_body_is_capped(allow_loopback, http_server, settings):
    settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES = 1000
    http_server.route("GET", "/big", Reply(200, "x" * 5000))
    out = run({"url": f"{http_server.url}/big"})
    assert out["body_truncated"] is True
    assert len(out["body"]) == 1000


# -- odd answers: the output must stay storable JSON -----------------------
def assert_storable(value):
    """What PostgreSQL jsonb accepts: strict JSON, no NUL, no lone surrogates."""
    text = json.dumps(value, allow_nan=False)
    assert "\\u0000" not in text
    text.encode("utf-8")


@pytest.mark.parametrize("charset", ["x-unknown-9", "base64", "idna", "punycode"])
def test_an_unknown_or_non_text_charset_falls_back_to_utf8(allow_loopback, http_server, charset):
    http_server.route(
        "GET", "/", Reply(200, "caf\u00e9 \xff".encode("latin-1"), {"Content-Type": f"text/plain; charset={charset}"})
    )
    out = run({"url": f"{http_server.url}/"})
    assert out["body"] == "caf\ufffd \ufffd"
    assert_storable(out)


def test_nan_and_infinity_in_a_json_body_become_strings(allow_loopback, http_server):
    raw = b'{"a": NaN, "b": Infinity, "c": [-Infinity, 1e400, 1.5]}'
    http_server.route("GET", "/", Reply(200, raw, {"Content-Type": "application/json"}))
    out = run({"url": f"{http_server.url}/"})
    assert out["body"] == {"a": "NaN", "b": "Infinity", "c": ["-Infinity", "1e400", 1.5]}
    assert_storable(out)


def test_nul_characters_and_lone_surrogates_are_kept_out_of_the_output(allow_loopback, http_server):
    http_server.route(
        "GET", "/json", Reply(200, b'{"k\\u0000": "a\\u0000b", "s": "\\ud800x"}', {"Content-Type": "application/json"})
    )
    http_server.route("GET", "/text", Reply(200, b"a\x00b", {"Content-Type": "text/plain"}))
    out = run({"url": f"{http_server.url}/json"})
    assert out["body"] == {"k\ufffd": "a\ufffdb", "s": "\ufffdx"}
    assert_storable(out)
    out = run({"url": f"{http_server.url}/text"})
    assert out["body"] == "a\ufffdb"
    assert_storable(out)


def test_json_nested_too_deeply_is_kept_as_text(allow_loopback, http_server):
    raw = b"[" * 30_000 + b"]" * 30_000  # under the 64 KiB cap
    http_server.route("GET", "/", Reply(200, raw, {"Content-Type": "application/json"}))
    out = run({"url": f"{http_server.url}/"})
    assert out["body"] == raw.decode()
    assert_storable(out)


def test_an_error_answer_with_an_odd_charset_is_still_classified(allow_loopback, http_server):
    http_server.route(
        "GET", "/", Reply(502, b"<html>Bad gateway \x00</html>", {"Content-Type": "text/html; charset=nope"})
    )
    with pytest.raises(RetryableError, match="HTTP 502") as exc:
        run({"url": f"{http_server.url}/"})
    assert "\x00" not in exc.value.message


# -- redirects -------------------------------------------------------------
def test_it_follows_redirects_and_turns_a_303_post_into_a_get(allow_loopback, http_server):
    http_server.route("POST", "/start", Reply(303, b"", {"Location": "/middle"}))
    http_server.route("GET", "/middle", Reply(302, b"", {"Location": f"{http_server.url}/end"}))
    http_server.route("GET", "/end", Reply(200, {"done": True}))
    out = run({"method": "POST", "url": f"{http_server.url}/start", "body": {"x": 1}})
    assert [(r.method, r.path) for r in http_server.requests] == [
        ("POST", "/start"),
        ("GET", "/middle"),
        ("GET", "/end"),
    ]
    assert http_server.requests[-1].body == b""
    assert out["body"] == {"done": True}
    assert out["redirects"] == [f"{http_server.url}/middle", f"{http_server.url}/end"]


def test_redirects_are_limited(allow_loopback, http_server):
    http_server.route("GET", "/loop", Reply(302, b"", {"Location": "/loop"}))
    with pytest.raises(PermanentError, match="too many redirects"):
        run({"url": f"{http_server.url}/loop"})
    assert len(http_server.requests) == 6  # the first request + 5 redirects


def test_a_redirect_to_another_origin_drops_the_credential(allow_loopback, http_server):
    with RecordingHTTPServer() as other:
        other.route("GET", "/there", Reply(200, {"ok": 1}))
        http_server.route("GET", "/go", Reply(307, b"", {"Location": f"{other.url}/there"}))
        run(
            {"url": f"{http_server.url}/go"},
            credential={"token": "secret", "allowed_hosts": ["127.0.0.1"]},
            kind="http_bearer",
        )
        assert http_server.requests[0].headers["authorization"] == "Bearer secret"
        assert "authorization" not in other.requests[0].headers


def test_redirects_are_not_followed_when_disabled(allow_loopback, http_server):
    http_server.route("GET", "/r", Reply(302, b"", {"Location": "/elsewhere"}))
    out = run({"url": f"{http_server.url}/r", "follow_redirects": False})
    assert out["status"] == 302
    assert out["headers"]["location"] == "/elsewhere"
    assert len(http_server.requests) == 1


# -- failure classification -----------------------------------------------
def test_a_500_is_retryable(allow_loopback, http_server):
    http_server.route("GET", "/x", Reply(500, "boom"))
    with pytest.raises(RetryableError, match="HTTP 500") as exc:
        run({"url": f"{http_server.url}/x"})
    assert exc.value.retry_after is None


def test_a_503_honours_retry_after_seconds(allow_loopback, http_server):
    http_server.route("GET", "/x", Reply(503, "busy", {"Retry-After": "7"}))
    with pytest.raises(RetryableError) as exc:
        run({"url": f"{http_server.url}/x"})
    assert exc.value.retry_after == 7


def test_a_429_honours_retry_after_as_a_date(allow_loopback, http_server):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    http_server.route("GET", "/x", Reply(429, "slow down", {"Retry-After": when}))
    with pytest.raises(RetryableError, match="HTTP 429") as exc:
        run({"url": f"{http_server.url}/x"})
    assert 25 <= exc.value.retry_after <= 31


def test_a_404_is_permanent(allow_loopback, http_server):
    with pytest.raises(PermanentError, match="HTTP 404"):
        run({"url": f"{http_server.url}/missing"})


def test_expected_status_decides_success(allow_loopback, http_server):
    http_server.route("GET", "/gone", Reply(410, {"gone": True}))
    assert run({"url": f"{http_server.url}/gone", "expected_status": [410]})["body"] == {"gone": True}
    http_server.route("GET", "/ok", Reply(200, "ok"))
    with pytest.raises(PermanentError, match=r"not one of the expected \[201\]"):
        run({"url": f"{http_server.url}/ok", "expected_status": [201]})


def test_a_slow_server_times_out_as_retryable(allow_loopback, http_server):
    http_server.route("GET", "/slow", Reply(200, "late", delay=1.5))
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        run({"url": f"{http_server.url}/slow", "timeout": 0.3})
    assert time.monotonic() - started < 1.2


def test_the_step_timeout_applies_when_the_config_has_none(allow_loopback, http_server):
    http_server.route("GET", "/slow", Reply(200, "late", delay=1.5))
    with pytest.raises(RetryableError, match="timed out"):
        run({"url": f"{http_server.url}/slow"}, timeout_seconds=0.3)


def test_connection_refused_is_retryable(allow_loopback):
    with pytest.raises(RetryableError, match="connection error"):
        run({"url": f"http://127.0.0.1:{free_port()}/"})


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="config.url"):
        action.validate_config({"url": "ftp://example.com/"})
    with pytest.raises(ConfigError, match="config.method"):
        action.validate_config({"url": "https://example.com/", "method": "FETCH"})
    with pytest.raises(ConfigError, match="config.body"):
        action.validate_config({"url": "https://example.com/", "body_type": "form", "body": "a=b"})
    action.validate_config({"url": "{{ trigger.body.url }}", "timeout": "{{ trigger.body.t }}"})


# -- SSRF: end to end with the allow-list emptied -------------------------
@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]", "localhost", "localhost.", "LOCALHOST", "0.0.0.0"],
)
def test_loopback_destinations_are_blocked_and_receive_nothing(no_exceptions, http_server, host):
    with pytest.raises(PermanentError, match="blocked destination") as exc:
        run({"url": f"http://{host}:{http_server.port}/secret"})
    assert "nothing was sent" in exc.value.message
    assert http_server.requests == []


def test_a_hostname_resolving_to_loopback_is_blocked(no_exceptions, http_server, fake_dns):
    answers, _ = fake_dns
    answers["innocent.example"] = [["127.0.0.1"]]
    with pytest.raises(PermanentError, match="blocked destination: innocent.example resolves to 127.0.0.1"):
        run({"url": f"http://innocent.example:{http_server.port}/"})
    assert http_server.requests == []


def test_a_name_with_one_private_answer_among_public_ones_is_blocked(no_exceptions, fake_dns):
    # Nothing may be contacted: were the check wrong, the socket guard would fail the test.
    answers, _ = fake_dns
    answers["mixed.example"] = [["93.184.216.34", "10.0.0.7"]]
    with pytest.raises(PermanentError, match="10.0.0.7"):
        run({"url": "http://mixed.example/"})


def test_a_redirect_from_an_allowed_server_to_a_blocked_one_is_refused(settings, http_server):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1/32"]
    with RecordingHTTPServer(host="127.0.0.2") as internal:
        http_server.route("GET", "/out", Reply(302, b"", {"Location": f"http://127.0.0.2:{internal.port}/admin"}))
        with pytest.raises(PermanentError, match="blocked destination: 127.0.0.2"):
            run({"url": f"{http_server.url}/out"})
        assert len(http_server.requests) == 1
        assert internal.requests == []


def test_dns_rebinding_cannot_move_the_connection(settings, http_server, fake_dns):
    """The name is resolved once; the connection goes to the checked address even if DNS changes."""
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    answers, calls = fake_dns
    answers["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]  # first answer checked, later ones hostile
    with RecordingHTTPServer(host="127.0.0.2", port=http_server.port) as internal:
        http_server.route("GET", "/", Reply(200, "public side"))
        out = run({"url": f"http://rebind.example:{http_server.port}/"})
        assert out["body"] == "public side"
        assert calls == ["rebind.example"]
        assert internal.requests == []
        assert http_server.requests[0].headers["host"] == f"rebind.example:{http_server.port}"


def test_an_allow_listed_host_name_is_allowed(settings, http_server):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["localhost"]
    http_server.route("GET", "/", Reply(200, "hi"))
    assert run({"url": f"http://localhost:{http_server.port}/"})["body"] == "hi"


# -- SSRF: the address decision itself (nothing is ever sent) -------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.0.9", "0.0.0.0", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
        "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "224.0.0.1", "239.255.255.250",
        "240.0.0.1", "255.255.255.255", "192.0.0.8", "198.18.0.1", "192.0.2.1",
        "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fd00::1", "fc00::1",
        "fe80::1", "ff02::1", "2002:7f00:1::", "2002:a00:1::", "64:ff9b::a00:1", "64:ff9b::7f00:1", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address):
    ip = net.ipaddress.ip_address(address)
    assert not net.is_public_address(ip)
    with pytest.raises(net.BlockedDestination, match="blocked destination"):
        net.check_address(ip, host=address, allow=net.parse_allow_list([]))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"])
def test_public_addresses_pass(address):
    assert net.is_public_address(net.ipaddress.ip_address(address))


def test_the_allow_list_accepts_cidrs_ips_and_host_names():
    allow = net.parse_allow_list(["10.1.0.0/16", "192.168.5.5", "intranet.local.", " "])
    net.check_address(net.ipaddress.ip_address("10.1.2.3"), host="x", allow=allow)
    net.check_address(net.ipaddress.ip_address("::ffff:10.1.2.3"), host="x", allow=allow)
    net.check_address(net.ipaddress.ip_address("192.168.5.5"), host="x", allow=allow)
    net.check_address(net.ipaddress.ip_address("10.9.9.9"), host="Intranet.Local", allow=allow)
    with pytest.raises(net.BlockedDestination):
        net.check_address(net.ipaddress.ip_address("10.2.0.1"), host="x", allow=allow)
    with pytest.raises(ValueError, match="neither"):
        net.parse_allow_list(["10.0.0.0/33x"])


# -- files (issue 23) -----------------------------------------------------------------
def test_a_file_goes_as_a_multipart_field_and_as_a_raw_body(file_storage, organization, allow_loopback, http_server):
    data = bytes(range(256)) * 10
    ref = stored_file(organization, "blob.bin", data, "application/x-thing")
    http_server.route("POST", "/upload", Reply(201, {"ok": True}))
    http_server.route("PUT", "/upload", Reply(204))
    action.run({"method": "POST", "url": f"{http_server.url}/upload", "body_type": "multipart",
                "body": {"note": "hello"}, "files": {"attachment": ref}}, file_ctx(organization))  # fmt: skip
    multipart = http_server.requests[-1]
    assert multipart.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="note"\r\n\r\nhello' in multipart.body
    assert (
        b'name="attachment"; filename="blob.bin"\r\nContent-Type: application/x-thing\r\n\r\n' + data in multipart.body
    )
    action.run({"method": "PUT", "url": f"{http_server.url}/upload", "body_type": "file", "body": ref},
               file_ctx(organization))  # fmt: skip
    raw = http_server.requests[-1]
    assert raw.body == data and raw.headers["content-type"] == "application/x-thing"


def test_a_response_is_saved_as_a_file_within_its_limit(file_storage, organization, allow_loopback, http_server,
                                                        settings):  # fmt: skip
    data = b"%PDF-" + bytes(range(256)) * 300
    http_server.route("GET", "/files/report.pdf", Reply(200, data, {"Content-Type": "application/pdf"}))
    out = action.run({"url": f"{http_server.url}/files/report.pdf", "save_response_as_file": True},
                     file_ctx(organization))  # fmt: skip
    assert out["file"]["name"] == "report.pdf" and out["file"]["size"] == len(data)
    assert out["file"]["sha256"] == hashlib.sha256(data).hexdigest() and "body" not in out
    assert list(file_storage.objects().values()) == [data]
    settings.POTAFLOW_UPLOAD_MAX_BYTES = 1000
    with pytest.raises(PermanentError, match="POTAFLOW_UPLOAD_MAX_BYTES"):
        action.run({"url": f"{http_server.url}/files/report.pdf", "save_response_as_file": "again.pdf"},
                   file_ctx(organization))  # fmt: skip
    assert RunFile.objects.count() == 1 and len(file_storage.objects()) == 1
