"""The client's address, trusting ``X-Forwarded-For`` only as far as configured proxies vouch for it.

Anyone can send ``X-Forwarded-For``; believing it lets a client pick a new
address per request and walk around every per-address limit. So the address
is ``REMOTE_ADDR`` unless that peer is a trusted proxy
(``POTAFLOW_TRUSTED_PROXIES``: addresses or networks; by default, with
``POTAFLOW_BEHIND_PROXY=true``, loopback and private networks, and nothing
otherwise). Then the header is read from the right, skipping entries that are
themselves trusted proxies, and the first untrusted entry is the client:
what a client prepends to the header is never reached.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def is_trusted_proxy(address: str) -> bool:
    """Whether ``address`` (a peer's IP) is one of ``POTAFLOW_TRUSTED_PROXIES``."""
    parsed = _parse(address)
    networks = _networks(tuple(settings.POTAFLOW_TRUSTED_PROXIES))
    return parsed is not None and bool(networks) and _trusted(parsed, networks)


def client_ip(request: HttpRequest) -> str:
    """The address per-client limits are keyed on; never a value the client alone chose."""
    meta = request.META
    remote = _parse(meta.get("REMOTE_ADDR", "") or "")
    if remote is None:
        return meta.get("REMOTE_ADDR", "") or "unknown"
    networks = _networks(tuple(settings.POTAFLOW_TRUSTED_PROXIES))
    if not networks or not _trusted(remote, networks):
        return str(remote)
    hops = [hop for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    client = remote
    while hops and _trusted(client, networks):
        parsed = _parse(hops.pop())
        if parsed is None:  # garbage from beyond the last trusted hop: stop at that hop
            break
        client = parsed
    return str(client)
