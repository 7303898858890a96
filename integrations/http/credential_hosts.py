"""Where a credential may be sent: its ``allowed_hosts`` rule.

An editor chooses a step's URL; an admin chooses the credential. Without a
rule an editor could point an ``http.request`` step carrying an admin's
bearer token at a server that echoes requests and read the token. So every
``http_*`` credential names its destinations, and ``http.request`` refuses,
before sending anything, a URL the rule does not cover.

An entry is either
- a host: ``api.example.com`` (any scheme and port), or ``*.example.com``
  (any subdomain, not ``example.com`` itself), or an IP address; or
- a URL prefix: ``https://api.example.com/v1/`` — same scheme, host and port,
  and a path inside the prefix (``/v1/...``; ``/v10`` is not inside ``/v1``).
  Paths with ``.``/``..`` segments never match a prefix (a server would
  normalise them out of it).

Slack, SendGrid, Google and SMTP credentials need no rule: their actions only
ever send them to the API URL of the service (``POTAFLOW_SLACK_API_URL``,
``POTAFLOW_SENDGRID_API_URL``, Google's token and Sheets URLs) or to the
SMTP host stored in the credential itself, never to a URL a step chooses.

Credentials created before this rule have no ``allowed_hosts``: they are
refused (at save time and at run time) until an admin sets it — the safe
default, with a message saying so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class NotAllowed(Exception):  # noqa: N818 - a refusal, named after what users see
    """The URL is outside the credential's rule; the message names the rule and the host."""


@dataclass(frozen=True)
class Rule:
    entry: str
    host: str
    wildcard: bool = False
    scheme: str | None = None
    port: int | None = None
    path: str | None = None

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if self.wildcard:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        if self.scheme is None:
            return True
        if scheme != self.scheme or port != self.port or _has_dot_segments(path):
            return False
        prefix = self.path or "/"
        return path == prefix.rstrip("/") or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _has_dot_segments(path: str) -> bool:
    decoded = urllib.parse.unquote(path)
    return any(segment in (".", "..") for segment in decoded.split("/"))


def _check_host(host: str, entry: str) -> str:
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{entry!r} is not a host name") from None
    if not host or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise ValueError(f"{entry!r} is not a host name (e.g. api.example.com, *.example.com)")
    return host


def parse_entry(entry: str) -> Rule:
    """One ``allowed_hosts`` entry; ``ValueError`` naming it when malformed."""
    text = entry.strip()
    if "://" in text:
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a valid URL prefix ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{entry!r}: a URL prefix is http:// or https:// with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"{entry!r}: a URL prefix has no query, fragment or user info")
        if _has_dot_segments(parts.path):
            raise ValueError(f"{entry!r}: a URL prefix has no '.' or '..' segments")
        return Rule(
            entry=text,
            host=_check_host(parts.hostname, entry),
            scheme=scheme,
            port=port or _DEFAULT_PORTS[scheme],
            path=parts.path or "/",
        )
    wildcard = text.startswith("*.")
    if "/" in text or (":" in text and not _is_ip(text)):
        raise ValueError(
            f"{entry!r}: write a host (api.example.com) or a full URL prefix (https://api.example.com/v1/)"
        )
    return Rule(entry=text, host=_check_host(text.removeprefix("*."), entry), wildcard=wildcard)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def clean(value: object) -> list[str]:
    """The stored form of ``allowed_hosts``: a list of valid entries (from a list or a
    comma/whitespace-separated string); ``ValueError`` naming the first bad entry."""
    if isinstance(value, str):
        entries = [e for e in re.split(r"[\s,]+", value) if e]
    elif isinstance(value, list | tuple) and all(isinstance(e, str) for e in value):
        entries = [e.strip() for e in value if e.strip()]
    else:
        raise ValueError("must be a list of hosts or URL prefixes")
    if not entries:
        raise ValueError("must name at least one host or URL prefix")
    for entry in entries:
        parse_entry(entry)
    return list(dict.fromkeys(entries))


def check(allowed: Iterable[str] | None, url: str) -> None:
    """Raise ``NotAllowed`` unless ``url`` is covered by the ``allowed`` entries."""
    if not allowed:
        raise NotAllowed(
            "the credential has no allowed_hosts (it predates the rule): an admin must set the hosts "
            "it may be sent to before a step can use it"
        )
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    path = parts.path or "/"
    rules = [parse_entry(entry) for entry in allowed]
    if any(rule.matches(scheme, host, port, path) for rule in rules):
        return
    listed = ", ".join(rule.entry for rule in rules)
    target = urllib.parse.urlunsplit((scheme, parts.netloc.rsplit("@", 1)[-1], path, "", ""))
    raise NotAllowed(f"the credential may not be sent to {host}: {target} is outside its allowed_hosts rule ({listed})")
