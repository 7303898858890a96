"""Which runs still have a step message in the broker -- so the sweeper re-sends only what is gone.

A run that made no progress for ``POTAFLOW_STALLED_AFTER_SECONDS`` is usually
just *queued* behind a backlog; re-sending it doubles the backlog (and every
copy is then dropped as a duplicate). On Redis the sweeper can look: a step
message is either in a queue's lists (``celery``, the recovery queue, each
priority level) or *held* -- delivered to a worker and not acknowledged yet,
in kombu's ``unacked`` hash with the time it was delivered in
``unacked_index``. A held message that is neither a running step (those have
leases) nor a retry waiting for its countdown was reserved by a worker that
is not starting it: after ``stalled_after`` that worker is presumed dead (its
messages would only come back after the visibility timeout).

The lists are read before the hash: a message moves from a list to the hash
when a worker takes it, so read in that order it is seen at least once. Only
the message headers are matched (``argsrepr``: the run id is the first
argument); a chain's later steps are inside the base64 body and are not
messages yet. Other brokers (RabbitMQ gives a dead consumer's messages back at
once; the filesystem transport in development) answer None: the sweeper goes
by age alone there.
"""

import logging
import re
from dataclasses import dataclass, field
from functools import cached_property

from celery import current_app
from django.conf import settings

from .dispatch import EXECUTE_STEP_TASK

logger = logging.getLogger(__name__)

# kombu's JSON of a Celery (protocol 2) message: headers come as "argsrepr": "('<run id>', <position>)".
_RUN_IN_HEADERS = re.compile(r"\"argsrepr\": \"\('([0-9a-f-]{36})', (\d+)\)")
_TASK_IN_HEADERS = f'"task": "{EXECUTE_STEP_TASK}"'
READ_CHUNK = 1000


@dataclass
class InFlight:
    """Step messages by (run id, position): a flow run has one per list in progress (a loop's iterations)."""

    queued_steps: set[tuple[str, int]] = field(default_factory=set)  # waiting in a queue
    held_steps: dict[tuple[str, int], float] = field(default_factory=dict)  # -> when a worker took it (epoch s)

    @cached_property
    def queued(self) -> set[str]:
        """Run ids with a message waiting in a queue."""
        return {run_id for run_id, _ in self.queued_steps}

    @cached_property
    def held(self) -> dict[str, float]:
        """Run id -> when a worker took its latest held message (epoch s)."""
        found: dict[str, float] = {}
        for (run_id, _), when in self.held_steps.items():
            found[run_id] = max(found.get(run_id, 0.0), when)
        return found


def can_look() -> bool:
    """Whether this broker can be looked into (Redis)."""
    url = current_app.conf.broker_write_url or current_app.conf.broker_url or ""
    return str(url).startswith(("redis://", "rediss://", "unix://"))


def in_flight() -> InFlight | None:
    """Step messages in the broker by run id; None when this broker cannot be looked into."""
    if not can_look():
        return None
    found = InFlight()
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client  # type: ignore[attr-defined]
        for queue in (current_app.conf.task_default_queue, settings.POTAFLOW_RECOVERY_QUEUE):
            for priority in channel.priority_steps:  # type: ignore[attr-defined]
                key = channel._q_for_pri(queue, priority)  # type: ignore[attr-defined]  # noqa: SLF001
                start = 0
                while True:
                    items = client.lrange(key, start, start + READ_CHUNK - 1)
                    for raw in items:
                        step = _step_of(raw)
                        if step:
                            found.queued_steps.add(step)
                    if len(items) < READ_CHUNK:
                        break
                    start += READ_CHUNK
        delivered = {
            _text(tag): score
            for tag, score in client.zrange(channel.unacked_index_key, 0, -1, withscores=True)  # type: ignore[attr-defined]
        }
        for tag, raw in client.hgetall(channel.unacked_key).items():  # type: ignore[attr-defined]
            step = _step_of(raw)
            if step:
                when = float(delivered.get(_text(tag), 0.0))
                found.held_steps[step] = max(found.held_steps.get(step, 0.0), when)
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _step_of(raw: bytes | str) -> tuple[str, int] | None:
    """The (run id, position) a step message is for; None for any other message."""
    text = _text(raw)
    if _TASK_IN_HEADERS not in text:
        return None
    match = _RUN_IN_HEADERS.search(text)
    return (match.group(1), int(match.group(2))) if match else None
