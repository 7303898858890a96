"""Login throttling: per client address and per account, shared by the API and the admin.

Why both: a per-address limit alone is walked around with many addresses (a
botnet, or a forged ``X-Forwarded-For`` before ``core.client_ip``); a
per-account limit alone lets anyone lock a user out. So:

- failed logins per client address are limited (``POTAFLOW_AUTH_THROTTLE_RATE``);
- failed logins per account are limited too (``POTAFLOW_LOGIN_ACCOUNT_RATE``),
  whatever the address, which slows a distributed guess;
- an address the account has logged in from successfully before
  (``POTAFLOW_LOGIN_KNOWN_ADDRESS_DAYS``) is exempt from the per-account limit,
  so an attack on the account does not lock its owner out; and every lock
  ends by itself when the window does.

Checked by ``accounts.backends.ThrottledModelBackend`` before the password is
hashed, so a throttled attempt costs no Argon2 time either. Each attempt is
reserved first (one atomic increment, then the comparison): checking the count
and adding to it later let concurrent attempts through together. A success gives
its reservation back. Counters live in the default cache, which must be shared by
every web process and increment atomically (Redis, or the embedded
``core.cache.LockingFileBasedCache``; see settings).
"""

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.settings import api_settings

from core.client_ip import client_ip

from .models import normalize_email

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*\s*$", re.I)


class LoginThrottled(Exception):  # noqa: N818 - reads as what happened, like DRF's Throttled
    """Too many failed logins; ``wait`` is the number of seconds until the next attempt may be made."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"Too many failed logins. Try again in {wait} seconds.")
        self.wait = wait


@dataclass(frozen=True)
class Rate:
    limit: int
    seconds: int


def parse_rate(rate: str) -> Rate:
    """``"20/min"``, ``"10/h"``, ``"5/15m"``: a count per period (s, m, h, d, optionally with a multiplier)."""
    match = _RATE.match(rate or "")
    if not match:
        raise ValueError(f"Invalid rate {rate!r}: write <count>/<period>, e.g. 20/min, 10/h or 5/15m.")
    count, multiplier, unit = match.groups()
    return Rate(int(count), int(multiplier or 1) * _UNITS[unit.lower()])


def _digest(value: str) -> str:
    # Cache keys without raw emails or odd characters (memcached rejects spaces).
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _window(prefix: str, rate: Rate, now: float) -> tuple[str, int]:
    """Fixed window: the key of the current one and the seconds left in it."""
    index = int(now // rate.seconds)
    return f"{prefix}:{rate.seconds}:{index}", max(1, int((index + 1) * rate.seconds - now + 0.999))


def _buckets(request: HttpRequest, email: str) -> list[tuple[str, Rate]]:
    address = client_ip(request)
    account = _digest(normalize_email(email))
    # djangorestframework-stubs type the rates as numbers; DRF's rates are strings ("20/min").
    address_rate = parse_rate(api_settings.DEFAULT_THROTTLE_RATES["auth"])  # type: ignore[arg-type]
    buckets = [(f"potaflow:login:addr:{_digest(address)}", address_rate)]
    if not cache.get(_known_key(account, address)):
        buckets.append((f"potaflow:login:acct:{account}", parse_rate(settings.POTAFLOW_LOGIN_ACCOUNT_RATE)))
    return buckets


def _known_key(account: str, address: str) -> str:
    return f"potaflow:login:known:{account}:{_digest(address)}"


# Where login_guard leaves the keys it reserved for this request, for login_record to give back.
_RESERVED = "_potaflow_login_reserved"


def _reserve(key: str, ttl: int) -> int:
    """Add this attempt to the window's count, atomically; the count with it."""
    for _ in range(3):
        cache.add(key, 0, ttl)
        try:
            return int(cache.incr(key))
        except ValueError:  # the window expired between add and incr: start it again
            continue
    return 1


def login_guard(*, request: HttpRequest, email: str) -> None:
    """Reserve this attempt against the address and the account; ``LoginThrottled`` when either is over."""
    now = time.time()
    waits = []
    reserved = []
    for prefix, rate in _buckets(request, email):
        key, left = _window(prefix, rate, now)
        reserved.append(key)
        if _reserve(key, left + 1) > rate.limit:
            waits.append(left)
    setattr(request, _RESERVED, reserved)
    if waits:
        raise LoginThrottled(max(waits))


def login_record(*, request: HttpRequest, email: str, succeeded: bool) -> None:
    """A failure stays counted (login_guard reserved it); a success gives it back and remembers its address."""
    if not succeeded:
        return
    for key in getattr(request, _RESERVED, ()):
        with contextlib.suppress(ValueError):  # the window ended meanwhile: nothing to give back
            cache.decr(key)
    days = settings.POTAFLOW_LOGIN_KNOWN_ADDRESS_DAYS
    if days > 0:
        cache.set(_known_key(_digest(normalize_email(email)), client_ip(request)), 1, days * 86400)
