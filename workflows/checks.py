"""System checks: broker settings that would make the engine deliver a step twice.

Redis hands an unacknowledged message to another worker once it has been
held for ``visibility_timeout`` seconds. A step attempt may hold its message
until its hard time limit, so the longest one must end well before that
(``workflows.E001``); retry countdowns are capped below it by the engine, and
``workflows.W001`` says when that cap cuts into the usual retry policy and
``workflows.W002`` when the recovery sweeper would wait longer than Redis itself.
"""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register  # noqa: A004 - Django's names

from .execution.policy import HARD_LIMIT_GRACE_SECONDS, max_retry_delay, visibility_margin
from .models import STEP_DEFAULTS
from .validation import limits


@register()
def broker_visibility_check(app_configs: Any = None, **kwargs: Any) -> list:
    LIMITS = limits()  # noqa: N806 - read as the constant it extends

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    visibility = options.get("visibility_timeout")
    if not visibility:
        return []  # not a transport that redelivers held messages (filesystem, RabbitMQ)
    visibility = float(visibility)
    problems: list = []
    longest = LIMITS["timeout_seconds"][1] + HARD_LIMIT_GRACE_SECONDS
    if longest + visibility_margin(visibility) >= visibility:
        problems.append(
            Error(
                f"A step may run for {longest:g} s (timeout_seconds up to {LIMITS['timeout_seconds'][1]:g} s "
                f"plus {HARD_LIMIT_GRACE_SECONDS:g} s grace), which reaches the broker's visibility_timeout "
                f"({visibility:g} s): Redis would hand a running step's message to another worker.",
                hint="Raise POTAFLOW_BROKER_VISIBILITY_TIMEOUT well above the longest step "
                f"(at least {longest + 60:g} s).",
                id="workflows.E001",
            )
        )
    cap = max_retry_delay()
    if cap < STEP_DEFAULTS["backoff_max_seconds"]:
        problems.append(
            Warning(
                f"Retry delays are capped at {cap:g} s to stay below the broker's visibility_timeout "
                f"({visibility:g} s), shorter than the default backoff_max_seconds "
                f"({STEP_DEFAULTS['backoff_max_seconds']:g} s).",
                hint="Raise POTAFLOW_BROKER_VISIBILITY_TIMEOUT (default 3600).",
                id="workflows.W001",
            )
        )
    stalled = float(settings.POTAFLOW_STALLED_AFTER_SECONDS)
    if stalled >= visibility:
        problems.append(
            Warning(
                f"POTAFLOW_STALLED_AFTER_SECONDS ({stalled:g}) is not below the broker's visibility_timeout "
                f"({visibility:g} s): a run whose message was lost waits longer for the sweeper than Redis "
                "takes to redeliver a held one.",
                hint="Lower POTAFLOW_STALLED_AFTER_SECONDS (default 20).",
                id="workflows.W002",
            )
        )
    return problems


# The shortest rollup retention each Insights window needs (it and the period before it).
INSIGHTS_MINIMUM_DAYS = {"POTAFLOW_INSIGHTS_HOURLY_DAYS": 2, "POTAFLOW_INSIGHTS_DAILY_DAYS": 60}


@register()
def insights_retention_check(app_configs: Any = None, **kwargs: Any) -> list:
    """Rollups pruned before a window and its previous period are over would show false zeros."""
    return [
        Error(
            f"{name} is {getattr(settings, name)}: Insights needs at least {minimum} days of these rollups "
            "(a window and the period before it).",
            hint=f"Set {name} to {minimum} or more.",
            id="workflows.E002",
        )
        for name, minimum in INSIGHTS_MINIMUM_DAYS.items()
        if getattr(settings, name) < minimum
    ]
