"""What the webhook view needs before an event becomes a run: the body, read
within its limit whatever its framing, and the payload that is stored.

Kept out of the view so each rule has one place and its own tests:

- ``read_body``: a ``Content-Length`` body is read as Django reads it; a
  ``Transfer-Encoding: chunked`` body (no ``Content-Length``) is read from the
  server's de-chunked ``wsgi.input`` — only when the server says the stream
  ends with the body (``wsgi.input_terminated``, set by gunicorn), and never
  past ``limit`` + 1 bytes, so a 10 MB chunked body costs at most the limit in
  memory. A server that cannot frame such a body gets a 411: the event is
  refused, never accepted with a silently dropped body.
"""

from __future__ import annotations

from io import BytesIO

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

READ_CHUNK = 64 * 1024


class IntakeRefused(Exception):  # noqa: N818 - a refusal, named after what the sender sees
    """The request is refused before a run exists; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BodyTooLarge(IntakeRefused):
    status = 413


class LengthRequired(IntakeRefused):
    status = 411


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, or ``IntakeRefused`` (400/411/413)."""
    declared_header = request.META.get("CONTENT_LENGTH") or ""
    transfer_encoding = request.META.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
    if transfer_encoding and not declared_header:
        return _read_unsized(request, limit, transfer_encoding)
    try:
        declared = int(declared_header or 0)
    except ValueError:
        raise IntakeRefused("Content-Length header is not a number.") from None
    if declared > limit:
        raise BodyTooLarge(f"Body too large: {declared} bytes declared, the limit is {limit} bytes.")
    try:
        body = request.body
    except RequestDataTooBig:
        raise BodyTooLarge(f"Body too large: the limit is {limit} bytes.") from None
    if len(body) > limit:
        raise BodyTooLarge(f"Body too large: {len(body)} bytes, the limit is {limit} bytes.")
    return body


def _read_unsized(request: HttpRequest, limit: int, transfer_encoding: str) -> bytes:
    if not request.environ.get("wsgi.input_terminated"):
        # The server hands the raw stream over without saying where the body ends
        # (Django's runserver): reading it could block or swallow chunk framing.
        raise LengthRequired(
            f"Transfer-Encoding: {transfer_encoding} is not supported by this server: "
            "send the body with a Content-Length header."
        )
    stream = request.environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while True:
        piece = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
        if size > limit:
            raise BodyTooLarge(f"Body too large: more than {limit} bytes (chunked), the limit is {limit} bytes.")
    body = b"".join(parts)
    # Django sized its own stream from the (absent) Content-Length: give it the bytes
    # read, exactly as HttpRequest.body stores them, so form and multipart parsing see them.
    request._body = body
    request._stream = BytesIO(body)
    request.META["CONTENT_LENGTH"] = str(len(body))
    return body
