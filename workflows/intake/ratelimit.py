"""Per-workflow rate limit of webhook intake, shared by every web process.

``POTAFLOW_WEBHOOK_RATE`` (``N/s``, ``N/min``, ``N/h``; ``off`` disables) is
the sustained rate and ``POTAFLOW_WEBHOOK_BURST`` the most events accepted at
once. Counting uses fixed windows of ``burst / rate`` seconds (50/s with a
burst of 100: 100 events per 2-second window) in Django's cache, so every
process that shares the cache (Redis in production) shares the count. Each
event is one atomic ``cache.incr`` on the window's key, created with
``cache.add``: two processes can never both take the last slot.

An event over the limit is not accepted: the view answers 429 with
``Retry-After`` (seconds until the window ends) and the sender retries. Each
refusal increments a shared counter (``rejected_total``) and the first refusal
of a window is logged, so a flood costs one log line per window. When the
cache cannot be reached the limit fails open (logged): an outage of the cache
must not refuse every event.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

KEY_PREFIX = "potaflow:webhook-rate"
PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Limit:
    per_second: float
    burst: int

    @property
    def window_seconds(self) -> float:
        return self.burst / self.per_second


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    limit: Limit | None = None


def parse_rate(rate: str, burst: int | None = None) -> Limit | None:
    """``"50/s"`` -> Limit(50/s, burst or 50); ``"off"``/empty -> None; else ImproperlyConfigured."""
    text = (rate or "").strip().lower()
    if text in ("", "off", "none", "0"):
        return None
    match = _RATE.match(text)
    if not match or match.group(2) not in PERIODS or int(match.group(1)) <= 0:
        raise ImproperlyConfigured(
            f"POTAFLOW_WEBHOOK_RATE={rate!r} is not a rate like 50/s, 600/min or 10000/h (or off)."
        )
    count, period = int(match.group(1)), PERIODS[match.group(2)]
    if burst is not None and burst <= 0:
        raise ImproperlyConfigured(f"POTAFLOW_WEBHOOK_BURST={burst} must be a positive number of events.")
    return Limit(per_second=count / period, burst=burst or count)


def current_limit() -> Limit | None:
    return parse_rate(settings.POTAFLOW_WEBHOOK_RATE, settings.POTAFLOW_WEBHOOK_BURST)


def take(workflow_id: int, *, now: float | None = None) -> Decision:
    """Count one event for the workflow; ``allowed`` False when it is over the limit."""
    limit = current_limit()
    if limit is None:
        return Decision(allowed=True)
    now = time.time() if now is None else now
    window = limit.window_seconds
    index = int(now // window)
    key = f"{KEY_PREFIX}:{workflow_id}:{index}"
    ttl = math.ceil(window) + 1
    try:
        count = _increment(key, ttl)
    except Exception:  # noqa: BLE001 - redis/socket errors: the cache is down
        # Refusing every event while the cache is down would turn a cache outage into
        # lost or delayed events; the limit protects capacity, so it fails open, loudly.
        logger.exception("webhook rate limit: the cache is unavailable; event for workflow %s let through", workflow_id)
        return Decision(allowed=True, limit=limit)
    if count <= limit.burst:
        return Decision(allowed=True, limit=limit)
    retry_after = max(1, math.ceil((index + 1) * window - now))
    _count_rejection(workflow_id)
    if count == limit.burst + 1:
        logger.warning(
            "webhook rate limit: workflow %s refused events over %s in a %.3g s window (retry after %s s)",
            workflow_id,
            limit.burst,
            window,
            retry_after,
        )
    return Decision(allowed=False, retry_after=retry_after, limit=limit)


def _increment(key: str, ttl: int) -> int:
    cache.add(key, 0, timeout=ttl)
    try:
        return cache.incr(key)
    except ValueError:  # the key expired between add and incr
        cache.add(key, 0, timeout=ttl)
        return cache.incr(key)


def _count_rejection(workflow_id: int) -> None:
    for key in (f"{KEY_PREFIX}:rejected", f"{KEY_PREFIX}:rejected:{workflow_id}"):
        cache.add(key, 0, timeout=None)
        with contextlib.suppress(ValueError):  # evicted between add and incr: a lost count, never a failed request
            cache.incr(key)


def rejected_total(workflow_id: int | None = None) -> int:
    """Events refused by the rate limit (all workflows, or one), as counted in the shared cache."""
    key = f"{KEY_PREFIX}:rejected" + (f":{workflow_id}" if workflow_id is not None else "")
    return int(cache.get(key) or 0)
