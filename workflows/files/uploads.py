"""A webhook's multipart files, streamed to the file storage a chunk at a time.

``StorageUploadHandler`` is a Django upload handler: the multipart parser
hands it each file's chunks as it reads the body, and it writes them straight
to the storage (``services.Writer``: row first, then bytes), hashing and
counting as it goes. Nothing is held in memory beyond a chunk. Under the
default web server (``potaflow.web_worker.BufferingWorker``) the body was
received whole by the front first (in an anonymous temporary file past
256 KiB, within ``POTAFLOW_WEB_SPOOL_MAX_BYTES`` per process, gone when the
request ends): the parser reads it from there, so no thread waits on a client.

Limits (each refusal names its limit and setting; the view answers it):

- ``POTAFLOW_UPLOAD_REQUEST_MAX_BYTES``: the whole request, from its
  ``Content-Length`` before its body is read (413: by the front, which reads
  no more than it declared, and here again; a chunked body is read whole
  first, within ``POTAFLOW_WEBHOOK_MAX_BYTES``);
- ``POTAFLOW_FILE_QUOTA_BYTES``: the organization's kept files plus this
  request, from ``Content-Length`` before anything is written, then as each
  file is written (``services.reserve``: holds when uploads run at once) (413);
- ``POTAFLOW_UPLOAD_MAX_FILES``: files in one request (400);
- ``POTAFLOW_UPLOAD_MAX_BYTES``: one file, counted as it arrives (413);
- a body that ends before its last file does (a multipart body without its
  closing boundary; on a server that hands the application the socket, a
  ``Content-Length`` that promised more, a client gone, the upload deadline
  ``POTAFLOW_UPLOAD_BODY_TIMEOUT`` of ``potaflow.body_deadline``): ``interrupted``,
  refused (400/408). The front answers a cut or late body itself (400/408) and
  never hands it over.

A refused or failed request keeps nothing: ``discard`` deletes every file it
wrote. A web process killed mid-upload leaves ``uploading`` rows (an upload
is ``uploading`` until ``services.attach`` gives it its run), which the
pruner deletes with their bytes once ``POTAFLOW_UPLOAD_ABANDONED_SECONDS`` have passed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from ..models import FileOrigin, RunFile
from . import services
from .services import FileRefused


class StoredUpload(UploadedFile):
    """What ``request.FILES`` holds for a file already in the storage: its row, no bytes."""

    def __init__(self, row: RunFile) -> None:
        super().__init__(file=None, name=row.name, content_type=row.content_type, size=row.size)
        self.row = row

    def close(self) -> None:
        """Nothing is open: its bytes were written and closed as they arrived."""


def check_declared(request: HttpRequest, organization_id: int) -> RunFile | None:
    """Refuse, before reading the body, a request over its size limit; reserve its ``Content-Length``
    against the organization's quota (``services.reserve_pool``: 413 when it does not fit)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise FileRefused("Content-Length header is not a number.", status=400) from None
    limit = settings.POTAFLOW_UPLOAD_REQUEST_MAX_BYTES
    if declared > limit:
        raise FileRefused(
            f"Upload too large: {declared} bytes declared, the limit is {limit} bytes "
            "(POTAFLOW_UPLOAD_REQUEST_MAX_BYTES)."
        )
    services.check_quota(organization_id, 0)  # already over: refused without a reservation
    return services.reserve_pool(organization_id, declared)


class StorageUploadHandler(FileUploadHandler):
    """Writes each file of one request to the storage as its chunks arrive."""

    def __init__(self, request: HttpRequest, organization_id: int, pool: RunFile | None = None) -> None:
        super().__init__(request)
        self.organization_id = organization_id
        self.pool = pool  # the bytes its Content-Length reserved, which its files draw on
        self.writers: list[services.Writer] = []
        self.current: services.Writer | None = None
        self.interrupted: str | None = None  # the name of a file the body ended in the middle of

    def new_file(self, field_name: str, file_name: str, content_type: str, content_length: int | None,
                 charset: str | None = None, content_type_extra: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        most = settings.POTAFLOW_UPLOAD_MAX_FILES
        if len(self.writers) >= most:
            raise FileRefused(f"Too many files: more than {most} in one request (POTAFLOW_UPLOAD_MAX_FILES).", 400)
        row = services.start_file(
            organization_id=self.organization_id,
            origin=FileOrigin.UPLOAD,
            name=file_name,
            content_type=content_type,
            field=field_name,
        )
        self.current = services.Writer(
            row, limit=settings.POTAFLOW_UPLOAD_MAX_BYTES, setting="POTAFLOW_UPLOAD_MAX_BYTES", pool=self.pool
        )
        self.writers.append(self.current)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self.current is not None  # noqa: S101 - the parser calls new_file first
        self.current.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StoredUpload | None:
        if self.current is None:
            return None
        row = self.current.finish(ready=False)  # ready once attached to its run (services.attach)
        self.current = None
        return StoredUpload(row)

    def upload_interrupted(self) -> None:
        """The body ended in the middle of a file (Django's parser calls this, and drops the file)."""
        if self.current is not None:
            self.interrupted = self.current.row.name

    def receive_body(self, request: HttpRequest, body: bytes) -> RunFile:
        """The whole request body as one file (``trigger.files.body``): ``body`` when it was read
        already (a signature needed it), else streamed from the request as it arrives."""
        disposition = request.headers.get("Content-Disposition", "")
        name = next((part.split("=", 1)[1].strip().strip('"') for part in disposition.split(";")
                     if part.strip().lower().startswith("filename=")), "") or "body"  # fmt: skip
        self.new_file("body", name, request.content_type or "", len(body) or None)
        chunks = [body] if body else iter(lambda: request.read(self.chunk_size), b"")
        received = 0
        for chunk in chunks:
            received += len(chunk)
            self.receive_data_chunk(chunk, 0)
        if received < int(request.META.get("CONTENT_LENGTH") or 0):
            self.interrupted = self.current.row.name if self.current is not None else name  # cut short
        upload = self.file_complete(0)
        assert upload is not None  # noqa: S101 - new_file opened it
        return upload.row

    def rows(self) -> list[RunFile]:
        return [writer.row for writer in self.writers]

    def discard(self) -> None:
        """Delete every file this request wrote (refused, failed, or a repeated event), and its reservation."""
        for writer in self.writers:
            writer.discard()
        self.writers = []
        self.current = None
        self.release()

    def release(self) -> None:
        """Give back what the request reserved and its files did not use (once they are kept, or gone)."""
        services.release(self.pool)
        self.pool = None


def install(request: HttpRequest, organization_id: int) -> StorageUploadHandler:
    """Make the request's multipart files go to the storage (call before ``request.POST`` is read), after
    ``check_declared`` refused it or reserved its ``Content-Length`` against the quota."""
    handler = StorageUploadHandler(request, organization_id, check_declared(request, organization_id))
    request.upload_handlers = [handler]
    return handler
