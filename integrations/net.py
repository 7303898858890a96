"""Outbound-destination policy (the SSRF guard) for actions that call URLs users type.

The rule: resolve the host once, refuse the request if ANY resolved address is
not a public unicast address (loopback, private, link-local incl. the cloud
metadata address 169.254.169.254, CGNAT, multicast, reserved, unspecified,
and IPv6 forms that embed such an IPv4 address: ``::ffff:a.b.c.d``, 6to4,
NAT64, Teredo), then connect to the address that was checked — never resolve
again, so a DNS answer that changes between check and connect (DNS
rebinding) cannot redirect the request. Every redirect hop goes through the
same check.

``POTAFLOW_ALLOW_PRIVATE_DESTINATIONS`` (comma-separated hostnames, IPs or
CIDRs; empty by default) opens exceptions, e.g. an intranet service or the
local servers the tests run.

``integrations.guarded_requests`` gives client libraries built on ``requests``
(google-auth, gspread) the same policy.
"""

import ipaddress
import socket
from dataclasses import dataclass

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Special-purpose blocks the stdlib's is_global may consider global in some
# Python versions (IETF protocol assignments, benchmarking, shared CGNAT space).
_ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(n) for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "2001::/23")
)


class ResolutionError(OSError):
    """The host name could not be resolved; ``temporary`` when DNS said "try again"."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class BlockedDestination(Exception):  # noqa: N818 - a refusal, named after what users see
    """The destination is not allowed; nothing was sent."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_host(self, host: str) -> bool:
        return normalise_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            candidates.append(address.ipv4_mapped)
        return any(c in net for c in candidates for net in self.networks if c.version == net.version)


def normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_allow_list(entries: list[str] | tuple[str, ...]) -> AllowList:
    """Parse the allow-list setting; raises ValueError naming a malformed entry."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        host = normalise_host(entry)
        if not host or "/" in host or " " in host:
            raise ValueError(
                f"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS entry {raw!r} is neither a hostname, an IP nor a CIDR"
            )
        hosts.add(host)
    return AllowList(frozenset(hosts), tuple(networks))


def current_allow_list() -> AllowList:
    return parse_allow_list(getattr(settings, "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS", []))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded = []
    if address.ipv4_mapped:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour:
        embedded.append(address.sixtofour)
    if address.teredo:
        embedded.extend(address.teredo)
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def is_public_address(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (and only if any embedded IPv4 is too)."""
    if (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or any(address in net for net in _ALWAYS_BLOCKED if net.version == address.version)
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return all(is_public_address(v4) for v4 in _embedded_ipv4(address))
    return True


def check_address(address: IPAddress, *, host: str, allow: AllowList | None = None) -> None:
    """Raise BlockedDestination unless ``address`` may be contacted for ``host``."""
    allow = current_allow_list() if allow is None else allow
    if is_public_address(address) or allow.allows_host(host) or allow.allows_address(address):
        return
    raise BlockedDestination(
        f"blocked destination: {host} resolves to {address}, which is not a public address "
        "(an operator may allow it with POTAFLOW_ALLOW_PRIVATE_DESTINATIONS; web and worker read it at start)"
    )


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself, ``127.1`` included)."""
    try:
        infos = socket.getaddrinfo(normalise_host(host), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        temporary = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
        raise ResolutionError(f"cannot resolve {host!r}: {exc.strerror}", temporary=temporary) from exc
    except UnicodeError as exc:
        raise ResolutionError(f"cannot resolve {host!r}: invalid host name", temporary=False) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # a str for IPv4/IPv6; the stubs allow int
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolutionError(f"cannot resolve {host!r}: no addresses", temporary=True)
    return addresses


def pinned_address(host: str, port: int, *, allow: AllowList | None = None) -> IPAddress:
    """Resolve ``host`` once, check every answer, and return the address to connect to.

    All answers must pass: a name that resolves to one public and one private
    address is refused (an attacker controls which one a client would pick).
    """
    allow = current_allow_list() if allow is None else allow
    addresses = resolve(host, port)
    for address in addresses:
        check_address(address, host=host, allow=allow)
    return addresses[0]


# Redirects followed at most, by every client (each hop is checked again).
MAX_REDIRECTS = 5
