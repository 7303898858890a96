"""The SSRF guard (``integrations.net``) for client libraries built on ``requests`` (google-auth, gspread).

``guarded_session()`` mounts a transport adapter that checks every request,
each redirect hop included, and connects to the checked address.
(``integrations.net`` holds the policy, which ``http.request`` and SMTP use
without ``requests``.)
"""

import urllib.parse
from typing import Any

import requests

from .net import MAX_REDIRECTS, AllowList, BlockedDestination, current_allow_list, normalise_host, pinned_address


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` transport adapter that applies the policy to every request it sends.

    ``requests`` sends each redirect hop through the adapter again, so every hop
    is checked. The connection pool is keyed on the checked address while the
    host name stays in the ``Host`` header and in TLS (SNI and certificate
    check), so a second DNS answer can never move the connection.
    Raises ``BlockedDestination`` or ``ResolutionError`` (not ``requests``
    exceptions, so client libraries let them through unwrapped).
    """

    def __init__(self, *, allow: AllowList | None = None) -> None:
        super().__init__(max_retries=0)
        self.allow = allow

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urllib.parse.urlsplit(request.url or "")
        if parts.hostname:
            # Always this URL's host: requests copies the previous request's headers
            # onto a redirect, and a Host left from host A must not go to host B.
            request.headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
        kwargs["proxies"] = {}  # a proxy would resolve the name itself
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host = host_params["host"]
        port = host_params["port"] or (443 if host_params["scheme"] == "https" else 80)
        try:
            address = pinned_address(host, port, allow=self.allow)
        except BlockedDestination as exc:
            raise BlockedDestination(f"{exc} (requesting {_without_query(request.url)})") from None
        host_params["host"] = str(address)
        # Dropped by urllib3 for plain HTTP pools; for HTTPS they keep SNI and the certificate check on the name.
        pool_kwargs["server_hostname"] = normalise_host(host)
        pool_kwargs["assert_hostname"] = normalise_host(host)
        return host_params, pool_kwargs


def guarded_session(*, allow: AllowList | None = None, session: requests.Session | None = None) -> requests.Session:
    """Mount ``GuardedAdapter`` on ``session`` (a new one by default) for http and https.

    Environment proxies and ``.netrc`` are ignored (``trust_env = False``): a
    proxy would resolve names itself, and netrc credentials must not follow a
    user-chosen URL. At most ``MAX_REDIRECTS`` redirects, each one checked.
    """
    session = session if session is not None else requests.Session()
    allow = current_allow_list() if allow is None else allow
    adapter = GuardedAdapter(allow=allow)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    return session


def _without_query(url: str | None) -> str:
    parts = urllib.parse.urlsplit(url or "")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
