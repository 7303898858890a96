"""API-wide pieces: the one error shape every endpoint answers with.

Every error body is ``{"detail": "<sentence>", "errors": {field: [messages]}}``;
``errors`` is present only for validation errors (non-field problems sit under
``non_field_errors``). Views call services and let their errors through: the
exception handler turns the domain's validation errors (``WorkflowInvalid``
and its kinds, ``CredentialInvalid``, Django's ``ValidationError``) into DRF's,
a 400 in this shape; Django's ``PermissionDenied`` is a 403 (DRF keeps its message).
"""

import sys
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.views import defaults
from rest_framework import exceptions, parsers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import error_body, error_response
from integrations.services import CredentialInvalid
from workflows.validation import WorkflowInvalid

from .database_errors import DATABASE_ERRORS, unavailable


def domain_error(exc: Exception) -> exceptions.ValidationError | None:
    """The DRF ValidationError (400) a domain validation error stands for, with the same field names."""
    if isinstance(exc, WorkflowInvalid):
        return exceptions.ValidationError(exc.errors)
    if isinstance(exc, CredentialInvalid):
        return exceptions.ValidationError(exc.api_errors)
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = domain_error(exc) or exc
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = error_body(_summarise(errors), errors)
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = error_body(str(response.data["detail"]))
    else:
        response.data = error_body(str(response.data))
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


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler400``: Django's refusals of a request body (too large, too many fields, unreadable multipart).

    They are raised while the body is parsed, outside DRF's exception handling,
    and Django would answer with an HTML page; under ``/api/`` and ``/hooks/``
    they answer in the error shape, a body over the limit with 413.
    """
    if not request.path.startswith(("/api/", "/hooks/")):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(f"Request body too large: the limit is {limit} bytes.", 413)
    if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
        return error_response("Request body has too many fields.", 400)
    if isinstance(exception, MultiPartParserError):
        return error_response(f"Multipart form parse error - {exception}", 400)
    return error_response("Bad request.", 400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: an unknown URL under ``/api/`` or ``/hooks/`` answers in the error shape."""
    if request.path.startswith(("/api/", "/hooks/")):
        return error_response("Not found.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: the same for an unexpected error (which the tests treat as a bug).

    A database that does not answer (raised in a middleware, before any view)
    is a 503 with Retry-After instead (``potaflow.database_errors``).
    """
    current = sys.exc_info()[1]
    if isinstance(current, DATABASE_ERRORS):
        return unavailable(request, current)
    if request.path.startswith(("/api/", "/hooks/")):
        return error_response("Internal server error.", 500)
    return defaults.server_error(request)


class JSONParser(parsers.JSONParser):
    """DRF's strict JSON parser, plus a 400 for documents nested too deeply.

    DRF turns ``ValueError`` (syntax, NaN/Infinity) into a ParseError, but
    ``[`` repeated 50,000 times makes ``json`` raise ``RecursionError``: a 500.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply") from None
