"""Liveness + dependency check for load balancers, compose healthchecks and alerting.

``GET /healthz``: 200 when the database and the broker answer, 503 when
either does not. The body also says how fast the broker answered
(``broker_rtt_ms``: one request on an open connection) and how old the
oldest queued or running run is (``oldest_unfinished_run_age_seconds``,
null when there is none) — facts, not verdicts: a load balancer must not
take a web process out because the workers are behind.

``GET /healthz?strict`` is for alerting: it is also 503 (``"status":
"stalled"``) when that run is older than ``POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS``,
i.e. accepted events are not getting through (no worker, a stuck queue).
"""

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from core.broker import probe_queue
from workflows.ops.metrics import oldest_unfinished_run_age

logger = logging.getLogger(__name__)


def _failure(component: str, exc: Exception) -> str:
    # The endpoint is public: name the failure, keep hosts and credentials in the log.
    logger.error("healthz: %s unreachable: %s: %s", component, type(exc).__name__, exc)
    return f"error: {type(exc).__name__}"


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", reported by name
        return _failure("database", exc)
    return "ok"


def _check_broker() -> tuple[str, float | None]:
    try:
        probe = probe_queue()
    except Exception as exc:  # noqa: BLE001
        return _failure("broker", exc), None
    return "ok", probe.round_trip_ms


def _oldest_run_age() -> float | None:
    try:
        age = oldest_unfinished_run_age()
    except Exception as exc:  # noqa: BLE001 - e.g. before migrations: the age is unknown, not a failure
        logger.warning("healthz: oldest unfinished run unknown: %s: %s", type(exc).__name__, exc)
        return None
    return round(age, 1) if age is not None else None


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    database = _check_database()
    broker, round_trip_ms = _check_broker()
    healthy = database == "ok" and broker == "ok"
    age = _oldest_run_age() if database == "ok" else None
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "broker": broker,
        "broker_rtt_ms": round_trip_ms,
        "oldest_unfinished_run_age_seconds": age,
    }
    if "strict" in request.GET:
        limit = settings.POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS
        body["max_run_age_seconds"] = limit
        if healthy and age is not None and age > limit:
            body["status"] = "stalled"
            healthy = False
    return JsonResponse(body, status=200 if healthy else 503)
