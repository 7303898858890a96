"""guarded_requests.guarded_session: the SSRF guard as a requests transport (used by google-auth and gspread)."""

import ssl

import pytest
import requests

from integrations import guarded_requests, net
from testing.network import RecordingHTTPServer, Reply


@pytest.fixture
def tls_server(tls_certificate):
    """A recording server speaking HTTPS with a certificate for ``localhost`` (and 127.0.0.1)."""
    server = RecordingHTTPServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls_certificate[0]), str(tls_certificate[1]))
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.route("GET", "/", Reply(200, "over tls"))
    with server:
        yield server


def test_https_keeps_the_host_name_for_sni_and_the_certificate_check(tls_server, tls_certificate, fake_dns):
    answers, _ = fake_dns
    answers["elsewhere.example"] = [["127.0.0.1"]]  # same address, a name the certificate does not cover
    session = guarded_requests.guarded_session(allow=net.parse_allow_list(["127.0.0.1"]))
    response = session.get(f"https://localhost:{tls_server.port}/", verify=str(tls_certificate[0]), timeout=5)
    assert response.text == "over tls"
    assert tls_server.requests[0].headers["host"] == f"localhost:{tls_server.port}"
    with pytest.raises(requests.exceptions.SSLError, match="elsewhere.example"):
        session.get(f"https://elsewhere.example:{tls_server.port}/", verify=str(tls_certificate[0]), timeout=5)
    with pytest.raises(requests.exceptions.SSLError):  # not in the default trust store
        session.get(f"https://localhost:{tls_server.port}/", timeout=5)
    assert len(tls_server.requests) == 1


def test_every_redirect_hop_is_checked(http_server):
    http_server.route("GET", "/a", Reply(302, b"", {"Location": f"http://127.0.0.2:{http_server.port}/b"}))
    with RecordingHTTPServer(host="127.0.0.2", port=http_server.port) as internal:
        session = guarded_requests.guarded_session(allow=net.parse_allow_list(["127.0.0.1"]))
        with pytest.raises(net.BlockedDestination, match="blocked destination: 127.0.0.2"):
            session.get(f"{http_server.url}/a", timeout=5)
        assert internal.requests == []


def test_redirects_are_limited(http_server):
    http_server.route("GET", "/loop", Reply(302, b"", {"Location": "/loop"}))
    session = guarded_requests.guarded_session(allow=net.parse_allow_list(["127.0.0.1"]))
    with pytest.raises(requests.TooManyRedirects):
        session.get(f"{http_server.url}/loop", timeout=5)
    assert len(http_server.requests) == net.MAX_REDIRECTS + 1


def test_environment_proxies_are_ignored(http_server, monkeypatch):
    # A proxy would resolve the name itself, after our check: it must not be used.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.3:9")
    http_server.route("GET", "/", Reply(200, "direct"))
    session = guarded_requests.guarded_session(allow=net.parse_allow_list(["127.0.0.1"]))
    assert session.get(f"{http_server.url}/", timeout=5).text == "direct"


def test_a_redirect_to_another_host_sends_that_hosts_name(http_server):
    # localhost and 127.0.0.1 are two host names for one allowed address: the second hop
    # must carry its own Host, not the one the first request was sent with.
    with RecordingHTTPServer() as other:
        other.route("GET", "/b", Reply(200, "moved"))
        http_server.route("GET", "/a", Reply(302, b"", {"Location": f"http://127.0.0.1:{other.port}/b"}))
        session = guarded_requests.guarded_session(allow=net.parse_allow_list(["127.0.0.1"]))
        assert session.get(f"http://localhost:{http_server.port}/a", timeout=5).text == "moved"
    assert http_server.requests[0].headers["host"] == f"localhost:{http_server.port}"
    assert other.requests[0].headers["host"] == f"127.0.0.1:{other.port}"
