"""The socket guard itself, free of pytest so a worker subprocess can install it too.

``install_socket_guard(report)`` patches ``socket.socket.connect``,
``connect_ex`` and ``sendto``: an address outside 127.0.0.0/8 and ::1 (or a
name resolving beyond them) raises ``NetworkGuardViolation`` before anything
is sent, after ``report(message)`` recorded it. Unix and netlink sockets pass.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from typing import Any

GUARD_LOG_ENV = "POTAFLOW_NETWORK_GUARD_LOG"


class NetworkGuardViolation(AssertionError):  # noqa: N818 - reads as a state, part of the API
    """A test (or the code it runs) tried to reach an address beyond loopback."""


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_sendto = socket.socket.sendto


def is_loopback_sockaddr(family: int, address: Any) -> bool:
    """True when ``address`` (a socket address of ``family``) is loopback only."""
    if family == getattr(socket, "AF_UNIX", None) or family == getattr(socket, "AF_NETLINK", None):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%", 1)[0]
    try:
        candidates = [ipaddress.ip_address(host)]
    except ValueError:
        # A host name: connect() would resolve it itself; every answer must be loopback.
        try:
            infos = socket.getaddrinfo(host, None, family)
        except OSError:
            return False
        candidates = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for candidate in candidates:
        if isinstance(candidate, ipaddress.IPv6Address) and candidate.ipv4_mapped:
            candidate = candidate.ipv4_mapped
        if not candidate.is_loopback:
            return False
    return bool(candidates)


def _guarded(kind: str, original: Callable, report: Callable[[str], None]) -> Callable:
    def guarded(sock: socket.socket, *args: Any) -> Any:
        address = args[-1]
        if not is_loopback_sockaddr(sock.family, address):
            message = f"network guard: {kind} to {address!r} ({sock.family!r}) blocked; tests may only reach loopback"
            report(message)
            raise NetworkGuardViolation(message)
        return original(sock, *args)

    guarded.__name__ = kind
    return guarded


def install_socket_guard(report: Callable[[str], None]) -> None:
    """Patch ``socket.socket`` so non-loopback connects raise (and are reported)."""
    socket.socket.connect = _guarded("connect", _original_connect, report)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded("connect_ex", _original_connect_ex, report)  # type: ignore[method-assign]
    socket.socket.sendto = _guarded("sendto", _original_sendto, report)  # type: ignore[method-assign]


def report_to_file(path: str) -> Callable[[str], None]:
    def report(message: str) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"pid {os.getpid()}: {message}\n")

    return report


def install_from_environment() -> bool:
    """Install the guard when ``POTAFLOW_NETWORK_GUARD_LOG`` names a report file (subprocesses)."""
    path = os.environ.get(GUARD_LOG_ENV)
    if not path:
        return False
    install_socket_guard(report_to_file(path))
    return True
