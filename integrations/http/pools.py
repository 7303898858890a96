"""Keep-alive connection pools for ``http.request``, each pinned to an address the SSRF guard checked.

A new TCP (and TLS) connection per call costs a round trip or three; a worker
calling the same destination again reuses one instead. A pool connects only
to the address it was made for, so the guard's rule holds: the address is
checked on every call (``integrations.net.pinned_address``), then the pool
for exactly that (scheme, host, port, address, TLS settings) is used. A host
whose DNS answer changes gets a new pool; nothing connects anywhere it was
not checked for. The host name stays in the ``Host`` header and in TLS (SNI
and the certificate check).

Bounded: at most ``MAX_POOLS`` destinations (the least recently used pool is
closed beyond that) and ``MAX_CONNECTIONS`` idle connections kept per
destination (more run at once when the threads need them; the extra ones
are closed after use). Pools are shared by the threads of a process.
"""

import os
import threading

import urllib3
from urllib3._collections import RecentlyUsedContainer

from integrations.net import IPAddress

MAX_POOLS = 64
MAX_CONNECTIONS = 10

# (scheme, host, port, address, TLS settings): what makes a kept-alive connection reusable.
PoolKey = tuple[str, str, int, str, tuple[str | None, ...]]

_lock = threading.Lock()
_pools: RecentlyUsedContainer[PoolKey, urllib3.HTTPConnectionPool] = RecentlyUsedContainer(
    MAX_POOLS, dispose_func=lambda pool: pool.close()
)


def _tls_settings(scheme: str) -> tuple[str | None, ...]:
    # The trust store is read when a connection is made: a connection verified against
    # another one (SSL_CERT_FILE / SSL_CERT_DIR changed) is not reused.
    if scheme != "https":
        return ()
    return ("CERT_REQUIRED", os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def pool_for(scheme: str, host: str, port: int, address: IPAddress) -> urllib3.HTTPConnectionPool:
    """The pool that connects to ``address`` (already checked) for ``host``; made on first use."""
    key: PoolKey = (scheme, host.lower(), port, str(address), _tls_settings(scheme))
    with _lock:
        try:
            return _pools[key]
        except KeyError:
            pass
        pool: urllib3.HTTPConnectionPool
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                str(address), port, server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED",
                retries=False, maxsize=MAX_CONNECTIONS, block=False,
            )  # fmt: skip
        else:
            pool = urllib3.HTTPConnectionPool(str(address), port, retries=False, maxsize=MAX_CONNECTIONS, block=False)
        _pools[key] = pool
        return pool


def clear() -> None:
    """Close every pool (tests that need a cold start; nothing else has to)."""
    with _lock:
        _pools.clear()
