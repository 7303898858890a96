"""What the web process can ask the broker: is it there, how fast, how much is waiting.

Used by ``/healthz`` (round-trip time), ``/metrics`` (queue length) and
``manage.py potaflow_status`` (queue depth). One short-lived connection per
probe, with tight timeouts, so a broker that hangs slows a health check or a
scrape by about two seconds, never indefinitely.

The queue length is what waits in the broker for a free worker: messages a
worker has already reserved (a retry's countdown, the one message each pool
child prefetches) are no longer in the queue and are not counted. Through
kombu's ``queue_declare(passive=True)`` it works the same on Redis (``LLEN``
over the priority lists), the filesystem transport (files in the folder) and
RabbitMQ; a queue that does not exist yet (Redis deletes an empty list) is 0.

The Celery app is the current one (``potaflow/__init__`` makes it so when
Django loads its settings): the shared kit never imports the project package.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from celery import current_app as celery_app
from django.conf import settings
from kombu.exceptions import ChannelError

CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class QueueProbe:
    queue: str
    length: int
    round_trip_ms: float


def probe_queue(queue: str | None = None) -> QueueProbe:
    """Connect, then time one request for the queue's length (raises when the broker is down)."""
    name = queue or celery_app.conf.task_default_queue
    with celery_app.connection_for_write() as conn:
        # kombu takes seconds as floats here; celery-types' kombu stubs say int.
        conn.ensure_connection(
            max_retries=1,
            interval_start=0,
            interval_step=0.2,  # type: ignore[arg-type]
            timeout=CONNECT_TIMEOUT,  # type: ignore[arg-type]
        )
        channel = conn.default_channel  # connected (Redis answers a PING here)
        started = time.perf_counter()
        try:
            # Every transport's channel has queue_declare; the stubs' StdChannel base does not list it.
            length = channel.queue_declare(queue=name, passive=True).message_count  # type: ignore[attr-defined]
        except ChannelError:
            length = 0  # never declared, or an empty Redis list (deleted when it emptied)
        elapsed_ms = (time.perf_counter() - started) * 1000
    return QueueProbe(queue=name, length=int(length), round_trip_ms=round(elapsed_ms, 3))


def broker_countdown(seconds: float) -> float:
    """A retry delay the broker can honour as given.

    On RabbitMQ with quorum queues Celery sends a delayed message through its
    native delayed delivery (the ``celery_delayed_*`` queues: the broker holds
    it, no worker does), which counts whole seconds: it truncates 1.9 s to 1 s
    and refuses anything under 1 s ("countdown must be a positive number", and
    the step's message would be lost). So on amqp a delay is rounded up to whole
    seconds; other brokers get it unchanged.
    """
    if seconds > 0 and getattr(settings, "POTAFLOW_BROKER_IS_AMQP", False):
        return float(math.ceil(seconds))
    return seconds
