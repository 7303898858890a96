"""The one way a file's bytes go to a person: an attachment, never rendered by the browser."""

from __future__ import annotations

from django.http import FileResponse, JsonResponse
from django.views.decorators.http import require_GET

from core.errors import error_response

from ..models import RunFile
from . import links, storage


def file_response(row: RunFile) -> FileResponse | JsonResponse:
    """Stream ``row``'s bytes as a download: ``application/octet-stream`` whatever the sender said it was
    (its content type is not trusted), its name only in ``Content-Disposition`` (encoded by Django)."""
    try:
        stream = storage.file_storage().open(row.key, "rb")
    except FileNotFoundError:
        return error_response("The file's bytes are missing from the file storage.", 404)
    except OSError:
        return error_response("The file storage is unavailable; try again later.", 503)
    response = FileResponse(stream, as_attachment=True, filename=row.name, content_type="application/octet-stream")
    response["Content-Length"] = str(row.size)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
def download(request, token: str) -> FileResponse | JsonResponse:  # noqa: ANN001 - a Django view
    """``GET /files/<token>``: a signed link the API handed out (404 unknown, 410 expired)."""
    try:
        row = links.resolve(token)
    except links.LinkRefused as exc:
        return error_response(exc.message, exc.status)
    return file_response(row)
