"""Throttles: the anonymous auth endpoints (register, login, refresh, logout) per address; costly actions per user."""

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from core.client_ip import client_ip

from .login_throttle import parse_rate


class AuthRateThrottle(SimpleRateThrottle):
    """Per client address (``core.client_ip``: X-Forwarded-For only from trusted proxies) and per endpoint,
    at ``DEFAULT_THROTTLE_RATES["auth"]`` (env ``POTAFLOW_AUTH_THROTTLE_RATE``).

    DRF binds ``THROTTLE_RATES`` when the class is defined; reading the rate at
    request time lets ``override_settings`` (tests) and reloaded settings apply.
    Counters live in the default cache: per process with LocMem, shared across
    processes with a shared ``CACHE_URL`` (e.g. Redis).
    """

    scope = "auth"

    def get_rate(self) -> str | None:
        # djangorestframework-stubs type the rates as numbers; DRF's rates are strings ("20/min").
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)  # type: ignore[return-value]

    def get_ident(self, request: Request) -> str:
        return client_ip(request)

    def parse_rate(self, rate: str | None) -> tuple[int | None, int | None]:
        """The login throttle's rate syntax (20/min, 10/h, 5/15m): one rule for the setting both read."""
        if rate is None:
            return None, None
        parsed = parse_rate(rate)
        return parsed.limit, parsed.seconds

    def get_cache_key(self, request: Request, view) -> str:
        # One bucket per endpoint, so a burst of logins does not lock a client out of refreshing.
        return self.cache_format % {"scope": f"{self.scope}:{type(view).__name__}", "ident": self.get_ident(request)}


class SettingRateThrottle(UserRateThrottle):
    """Per signed-in user, at the rate the setting named ``rate_setting`` holds (read at request time).

    A subclass names its ``scope`` (its own bucket) and ``rate_setting``; the
    view's ``throttled`` names the setting in the 429.
    """

    rate_setting = ""

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting) or None


def form_throttled(request: HttpRequest, what: str) -> bool:
    """The member pages' account forms (sign-up, reset, invitation): True when this client address
    posted ``what`` more often than the "auth" rate (``POTAFLOW_AUTH_THROTTLE_RATE``) allows.

    The same rate and client address as the API's auth endpoints, counted in the shared cache.
    """
    throttle = AuthRateThrottle()
    number, period = throttle.parse_rate(throttle.rate)
    if number is None or period is None:
        return False
    key = f"pf-account-form:{what}:{client_ip(request)}"
    cache.add(key, 0, period)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, period)
        count = 1
    return count > number
