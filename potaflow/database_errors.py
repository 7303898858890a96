"""A database that does not answer is a ``503`` with ``Retry-After``, never a ``500``.

A lost connection (``pg_terminate_backend``, a failover, a restart) or a
database that refuses connections raises ``OperationalError`` /
``InterfaceError`` wherever the request touches it: in a view, or in a
middleware (sessions, authentication) before any view runs. A 500 tells a
webhook sender the event is bad; a 503 with ``Retry-After`` tells it to send
again, which every sender does by design. Both paths answer the same:
``DatabaseUnavailableMiddleware.process_exception`` for views and
``potaflow.api.server_error`` (``handler500``) for the rest. Each is counted
in ``/metrics`` (``potaflow_database_unavailable_total{kind}``); Django closes
the broken connection at the end of the request and the next one reconnects
(``CONN_HEALTH_CHECKS``).
"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from core.errors import error_response
from workflows.ops.metrics import DATABASE_UNAVAILABLE

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)


def request_kind(request: HttpRequest) -> str:
    if request.path.startswith("/hooks/"):
        return "webhook"
    if request.path.startswith("/api/"):
        return "api"
    return "page"


def unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 for ``exc`` (counted, logged without the request's URL)."""
    kind = request_kind(request)
    DATABASE_UNAVAILABLE.labels(kind=kind).inc()
    logger.error("database unavailable (%s request): %s: %s", kind, type(exc).__name__, exc)
    seconds = settings.POTAFLOW_DB_RETRY_AFTER_SECONDS
    detail = f"The database is unavailable: nothing was stored. Retry in {seconds} seconds."
    response: HttpResponse
    if kind == "page":
        response = HttpResponse(detail + "\n", status=503, content_type="text/plain; charset=utf-8")
    else:
        response = error_response(detail, 503)
    response["Retry-After"] = str(seconds)
    return response


class DatabaseUnavailableMiddleware:
    """A view's ``OperationalError``/``InterfaceError`` becomes a counted ``503`` with ``Retry-After``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return unavailable(request, exception)
        return None
