"""A step's retry policy, time limits and lease: numbers, no database.

Read from the run's definition snapshot (``spec``), falling back to
``STEP_DEFAULTS``; the broker settings bound what a retry may wait.
"""

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from celery import current_app
from django.conf import settings

from integrations.registry import UnknownAction, get_action

from ..flow import tree
from ..models import STEP_DEFAULTS, InDoubtPolicy

# Soft/hard Celery time limits beyond the step's own timeout_seconds (which the
# action enforces on its I/O): a hung handler is interrupted, never stuck forever.
SOFT_LIMIT_GRACE_SECONDS = 5.0
HARD_LIMIT_GRACE_SECONDS = 15.0
RETRY_AFTER_CAP_SECONDS = 3600.0


def policy(spec: dict[str, Any] | None, field: str) -> float:
    """A step's retry/time setting from its definition snapshot, or the default."""
    value = (spec or {}).get(field)
    number = float(STEP_DEFAULTS[field] if value is None else value)
    if field == "timeout_seconds":
        # Snapshots taken before an operator lowered the maximum obey it too.
        number = min(number, float(settings.POTAFLOW_STEP_TIMEOUT_MAX_SECONDS))
    return number


def soft_time_limit(spec: dict[str, Any] | None) -> float:
    """Seconds after which Celery interrupts an attempt (recorded as timed out, retried)."""
    return policy(spec, "timeout_seconds") + SOFT_LIMIT_GRACE_SECONDS


def time_limit(spec: dict[str, Any] | None) -> float:
    """Seconds after which Celery kills an attempt of this step (hard time limit)."""
    return policy(spec, "timeout_seconds") + HARD_LIMIT_GRACE_SECONDS


def runs_in_process(spec: Mapping[str, Any] | None) -> bool:
    """Does the step run in the task that finished the step before it (no broker message of its own)?

    Control steps (the engine decides them) and actions that only compute in memory
    (``Action.runs_in_process``) with no credential. A step that leaves the process keeps its own
    message: its claim token, its redelivery and its in-doubt handling are per message.
    """
    if not spec:
        return False
    if spec.get("action_type") in tree.CONTROL_TYPES:
        return True
    if spec.get("credential_id") is not None:
        return False
    try:
        action = get_action(str(spec.get("action_type") or ""))
    except UnknownAction:
        return False
    return action.runs_in_process and not action.has_side_effects and not action.credential_required


def computes_ahead(spec: Mapping[str, Any] | None) -> bool:
    """May the engine compute this step before claiming it (``Action.computes_ahead``)?"""
    if not runs_in_process(spec) or not spec or spec.get("action_type") in tree.CONTROL_TYPES:
        return False
    return get_action(str(spec.get("action_type"))).computes_ahead


def chain_limits(specs: Sequence[Mapping[str, Any] | None]) -> tuple[float, float]:
    """Soft and hard time limits of a message that runs ``specs`` one after the other (a step and the
    steps that run in its task): the sum of theirs, up to the limits of the longest step allowed
    (so the broker's visibility timeout still covers every message, ``workflows.E001``). A step
    reaching the soft limit is recorded as timed out and retried in a message of its own."""
    longest = float(settings.POTAFLOW_STEP_TIMEOUT_MAX_SECONDS)
    soft = sum(soft_time_limit(dict(spec) if spec else None) for spec in specs)
    hard = sum(time_limit(dict(spec) if spec else None) for spec in specs)
    return min(soft, longest + SOFT_LIMIT_GRACE_SECONDS), min(hard, longest + HARD_LIMIT_GRACE_SECONDS)


def lease_seconds() -> float:
    """How long a running attempt is presumed alive without its worker renewing the lease."""
    return float(settings.POTAFLOW_STEP_LEASE_SECONDS)


def in_doubt_policy(spec: dict[str, Any] | None, action: Any, config: dict[str, Any] | None) -> str:
    """``retry`` or ``dead_letter``: the step's own choice, else what the action makes safe."""
    chosen = (spec or {}).get("on_in_doubt") or ""
    if chosen in InDoubtPolicy.values:
        return chosen
    if action is not None and action.repeat_is_safe(config or {}):
        return InDoubtPolicy.RETRY
    return InDoubtPolicy.DEAD_LETTER


def visibility_margin(visibility_timeout: float) -> float:
    """Room kept below the broker's visibility timeout (clock skew, worker hand-over)."""
    return min(60.0, visibility_timeout * 0.25)


def max_retry_delay() -> float:
    """The longest retry countdown that cannot be redelivered while a worker holds it.

    Redis hands an unacknowledged message (a retry waiting for its ETA is one)
    to another worker after ``visibility_timeout`` seconds; every delay stays
    below it, with a margin.
    """
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    visibility = options.get("visibility_timeout")
    if not visibility:
        return RETRY_AFTER_CAP_SECONDS
    return max(1.0, min(RETRY_AFTER_CAP_SECONDS, float(visibility) - visibility_margin(float(visibility))))


def backoff_delay(*, attempt: int, backoff_seconds: float, backoff_max_seconds: float) -> float:
    """Exponential backoff with +-20 % jitter: attempt 1 waits ~backoff, then x2 each time, capped."""
    base = backoff_seconds * (2 ** max(attempt - 1, 0))
    jittered = base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography
    return float(max(0.0, min(jittered, backoff_max_seconds)))


def retry_delay(spec: dict[str, Any] | None, attempt: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: the destination's Retry-After wins, else backoff; capped."""
    if retry_after is not None:
        delay = max(float(retry_after), 0.0)
    else:
        delay = backoff_delay(
            attempt=attempt,
            backoff_seconds=policy(spec, "backoff_seconds"),
            backoff_max_seconds=policy(spec, "backoff_max_seconds"),
        )
    return min(delay, max_retry_delay())


def org_step_limit(organizations: int, *, others_waiting: bool) -> int:
    """How many steps of one organization may run at once right now (0: no limit).

    ``POTAFLOW_ORG_MAX_RUNNING_STEPS`` > 0 is a hard cap. By default (-1) the
    limit is work-conserving: none while no other organization has work
    waiting (one tenant alone uses every slot), and half the worker's slots (at
    least one) while one does, so each gets its share.
    """
    configured = int(settings.POTAFLOW_ORG_MAX_RUNNING_STEPS)
    if configured >= 0:
        return configured
    if organizations < 2 or not others_waiting:
        return 0
    return fair_share()


def fair_share() -> int:
    """An organization's slots while another has work waiting: half the worker's, at least one."""
    return max(1, math.ceil(worker_slots() / 2))


def worker_slots() -> int:
    """The most steps a worker runs at once: its pool's maximum (``-c`` or ``POTAFLOW_WORKER_CONCURRENCY``;
    a worker writes what it runs into its app's configuration, ``potaflow.celery_worker``)."""
    return int(current_app.conf.worker_concurrency or settings.CELERY_WORKER_CONCURRENCY)


def org_limit_may_apply(organizations: int) -> bool:
    """Whether claims must look at the organization at all (a single tenant without a cap never waits)."""
    configured = int(settings.POTAFLOW_ORG_MAX_RUNNING_STEPS)
    return configured > 0 or (configured < 0 and organizations >= 2)
