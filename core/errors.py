"""The one shape of every error PotaFlow answers: ``{"detail": "<one sentence>", "errors": {field: [...]}}``.

``errors`` is always there (``{}`` when no field is at fault), so a client reads
one shape whatever answered: DRF's exception handler, Django's 400/404/500
handlers, the middlewares and the raw WSGI/socket refusals of the web tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse


def error_body(detail: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"detail": detail, "errors": errors or {}}


def error_response(detail: str, status: int, errors: dict[str, Any] | None = None) -> JsonResponse:
    return JsonResponse(error_body(detail, errors), status=status)


class JsonNotFoundMiddleware:
    """An unknown URL under ``/api/`` or ``/hooks/`` answers the error shape with ``DEBUG`` too.

    ``handler404`` only serves when ``DEBUG`` is off; with it on, Django answers its
    HTML debug page, which API clients cannot read. Placed before ``CommonMiddleware``
    so its trailing-slash redirect still comes first.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code == 404
            and request.path.startswith(("/api/", "/hooks/"))
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            return error_response("Not found.", 404)
        return response
