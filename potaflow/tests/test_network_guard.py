"""The test-wide socket guard itself: it must stop traffic beyond loopback before it leaves."""

import socket

import pytest

from testing.network import (
    NetworkGuardViolation,
    RecordingHTTPServer,
    expected_guard_violations,
    is_loopback_sockaddr,
)


@pytest.mark.parametrize("address", [("10.255.255.1", 9), ("169.254.169.254", 80), ("93.184.216.34", 443)])
def test_a_connect_beyond_loopback_raises_before_sending(address):
    with expected_guard_violations() as caught, socket.socket() as s, pytest.raises(NetworkGuardViolation):
        s.connect(address)
    assert len(caught) == 1
    assert address[0] in caught[0]


def test_ipv6_and_udp_beyond_loopback_are_refused():
    with expected_guard_violations() as caught:
        with socket.socket(socket.AF_INET6) as s, pytest.raises(NetworkGuardViolation):
            s.connect_ex(("2606:4700:4700::1111", 53, 0, 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(NetworkGuardViolation):
            s.sendto(b"x", ("8.8.8.8", 53))
    assert len(caught) == 2


def test_loopback_and_unix_sockets_are_allowed():
    assert is_loopback_sockaddr(socket.AF_INET, ("127.0.0.2", 1))
    assert is_loopback_sockaddr(socket.AF_INET6, ("::1", 1, 0, 0))
    assert is_loopback_sockaddr(socket.AF_INET6, ("::ffff:127.0.0.1", 1, 0, 0))
    assert is_loopback_sockaddr(socket.AF_UNIX, "/tmp/x.sock")
    assert not is_loopback_sockaddr(socket.AF_INET, ("10.0.0.1", 1))
    with RecordingHTTPServer() as server, socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
