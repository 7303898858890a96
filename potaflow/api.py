"""API-wide pieces: the one error shape every endpoint answers with.

Every error body is ``{"detail": "<sentence>", "errors": {field: [messages]}}``;
``errors`` is present only for validation errors (non-field problems sit under
``non_field_errors``).
"""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, parsers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"detail": _summarise(errors), "errors": errors}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"])}
    else:
        response.data = {"detail": str(response.data)}
    return response


def _summarise(errors: dict[str, Any]) -> str:
    """One readable sentence naming the first offending field."""
    for field, messages in errors.items():
        first = messages[0] if isinstance(messages, list) and messages else messages
        if isinstance(first, dict):
            return f"Invalid input in {field}: {_summarise(first)}"
        if field == "non_field_errors":
            return str(first)
        return f"{field}: {first}"
    return "Invalid input."


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: an unknown URL under ``/api/`` or ``/hooks/`` answers in the error shape."""
    if request.path.startswith(("/api/", "/hooks/")):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: the same for an unexpected error (which the tests treat as a bug)."""
    if request.path.startswith(("/api/", "/hooks/")):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    return defaults.server_error(request)


class JSONParser(parsers.JSONParser):
    """DRF's strict JSON parser, plus a 400 for documents nested too deeply.

    DRF turns ``ValueError`` (syntax, NaN/Infinity) into a ParseError, but
    ``[`` repeated 50,000 times makes ``json`` raise ``RecursionError``: a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply") from None
