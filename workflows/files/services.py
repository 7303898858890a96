"""Writing, reading and deleting files (``RunFile`` rows and their bytes), in one place.

Every write follows one order: the row is committed ``uploading`` first, the
bytes are written, then the row becomes ``ready`` with its size and sha256.
A process that dies in between leaves a row the pruner finds
(``prune_files``), never bytes nobody knows about. A write refused at a limit
deletes what it wrote at once.

Limits, each with its setting, named in every refusal:
``POTAFLOW_UPLOAD_MAX_BYTES`` (one file), ``POTAFLOW_FILE_QUOTA_BYTES`` (what
one organization keeps, uploads, step files and stored files together).

The quota holds under concurrency: a file being written counts what it has
*reserved* (its row's ``size`` while ``uploading``), and a write reserves more,
``RESERVE_STEP`` at a time, in a transaction serialized per organization
(``reserve``), before writing past what it holds. Two uploads that each fit
cannot both pass when together they do not; a write that dies keeps its
reservation until the pruner deletes its row.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from accounts.models import Organization
from integrations.errors import PermanentError, RetryableError
from integrations.file_access import FileInfo, file_id

from ..models import FileOrigin, FileState, Run, RunFile
from . import storage

logger = logging.getLogger(__name__)

NAME_MAX = 255


class FileRefused(Exception):  # noqa: N818 - a refusal, named after what the sender sees
    """A write refused at a limit; ``status`` is the HTTP answer an upload gets (413 or 400)."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def display_name(name: str) -> str:
    """A name as sent, made storable and short (shown to people, never used as a path)."""
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch != "\x00").strip()
    return (cleaned or "file")[:NAME_MAX]


def info_of(row: RunFile) -> FileInfo:
    return FileInfo(id=str(row.pk), name=row.name, size=row.size, content_type=row.content_type, sha256=row.sha256)


# -- quota ---------------------------------------------------------------------
def used_bytes(organization_id: int | None = None) -> int:
    """Bytes of files kept (one organization's, or everyone's): what the quota and the storage figure count."""
    rows = RunFile.objects.all() if organization_id is None else RunFile.objects.filter(organization_id=organization_id)
    return int(rows.aggregate(total=Sum("size"))["total"] or 0)


def usage() -> tuple[int, int]:
    """(bytes, files) kept in the file storage, every organization's: potaflow_status and /metrics."""
    totals = RunFile.objects.aggregate(total=Sum("size"), files=Count("pk"))
    return int(totals["total"] or 0), int(totals["files"] or 0)


def check_quota(organization_id: int, incoming: int) -> None:
    """Refuse (413) when ``incoming`` more bytes would take the organization over its quota.

    A cheap early refusal (a request's ``Content-Length``); what holds the quota is ``reserve``."""
    quota = settings.POTAFLOW_FILE_QUOTA_BYTES
    if quota <= 0:
        return
    used = used_bytes(organization_id)
    if used + incoming > quota:
        raise _over_quota(used, incoming, quota)


def _over_quota(used: int, incoming: int, quota: int) -> FileRefused:
    return FileRefused(
        f"File quota exceeded: the organization keeps {used} bytes of files (with those being received) "
        f"and this would add {incoming}, "
        f"the quota is {quota} bytes (POTAFLOW_FILE_QUOTA_BYTES)."
    )


# Bytes a write reserves at a time: one short transaction per step, not per chunk.
RESERVE_STEP = 1024 * 1024
_QUOTA_LOCK = 0x7F11E5  # the advisory lock class of the per-organization quota lock (PostgreSQL)


def _lock_quota(organization_id: int) -> None:
    """Serialize quota decisions of one organization until the transaction ends."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_QUOTA_LOCK, organization_id])
    else:  # SQLite serializes writers anyway; others lock the organization's row
        Organization.objects.select_for_update().filter(pk=organization_id).exists()


def reserve(row: RunFile, total: int) -> None:
    """Count ``total`` bytes for ``row`` (being written) against its organization's quota, or refuse (413).

    ``row.size`` is what it holds already; the check and the new figure commit
    under the organization's lock, so concurrent writes see each other's reservations."""
    if total <= row.size:
        return
    organization_id = row.organization_id
    assert organization_id is not None  # noqa: S101 - a file being written has its organization
    quota = settings.POTAFLOW_FILE_QUOTA_BYTES
    with transaction.atomic():
        if quota > 0:
            _lock_quota(organization_id)
            others = used_bytes(organization_id) - row.size
            if others + total > quota:
                raise _over_quota(others, total, quota)
        RunFile.objects.filter(pk=row.pk).update(size=total)
    row.size = total


# -- writing -------------------------------------------------------------------
def start_file(
    *, organization_id: int, origin: str, name: str, content_type: str, field: str = "", run_id: Any = None
) -> RunFile:
    """Commit the row of a file about to be written (``uploading``): its bytes may now be written."""
    file_uuid = uuid.uuid4()
    row = RunFile(
        id=file_uuid,
        organization_id=organization_id,
        run_id=run_id,
        origin=origin,
        state=FileState.UPLOADING,
        field=display_name(field)[:100] if field else "",
        name=display_name(name),
        content_type=display_name(content_type)[:255] if content_type else "",
        key=storage.upload_key(organization_id, file_uuid),
    )
    with transaction.atomic():  # its own commit even inside a request's transaction: the pruner must see it
        row.save(force_insert=True)
    return row


def reserve_pool(organization_id: int, size: int) -> RunFile | None:
    """Reserve ``size`` bytes (a request's ``Content-Length``) for files about to arrive, or refuse (413).

    Concurrent requests are then decided in the order they came, whole: the ones
    that fit go on, the next is refused before anything is read, instead of all of
    them starving each other halfway. The pool is a row without bytes
    (``uploading``: the pruner takes it if its process dies); its files draw on
    it (``Writer(pool=...)``), ``release`` gives back what they did not use."""
    if size <= 0 or settings.POTAFLOW_FILE_QUOTA_BYTES <= 0:
        return None
    pool = start_file(organization_id=organization_id, origin=FileOrigin.UPLOAD, name="(reserved for an upload)",
                      content_type="")  # fmt: skip
    try:
        reserve(pool, size)
    except BaseException:
        delete_rows([pool])
        raise
    return pool


def _draw(pool: RunFile, row: RunFile, wanted: int) -> None:
    """Move up to ``wanted`` reserved bytes from ``pool`` to ``row`` (the organization's total is unchanged)."""
    moved = min(wanted, pool.size)
    if moved <= 0:
        return
    with transaction.atomic():
        RunFile.objects.filter(pk=pool.pk).update(size=F("size") - moved)
        RunFile.objects.filter(pk=row.pk).update(size=F("size") + moved)
    pool.size -= moved
    row.size += moved


def release(pool: RunFile | None) -> None:
    """Give back what a request reserved and its files did not use."""
    if pool is not None:
        RunFile.objects.filter(pk=pool.pk).delete()  # no bytes were ever written at its key


class Writer:
    """Streams one file's bytes to storage, counting and hashing them, within a byte limit."""

    def __init__(self, row: RunFile, *, limit: int, setting: str, pool: RunFile | None = None) -> None:
        self.row = row
        self.limit = limit
        self.setting = setting
        self.pool = pool
        self.size = 0
        self.digest = hashlib.sha256()
        self.stream: IO[bytes] | None = storage.open_for_writing(row.key)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise FileRefused(
                f"File too large: {self.row.name!r} is over {self.limit} bytes, the limit ({self.setting})."
            )
        if self.size > self.row.size and self.pool is not None:  # from its request's reservation first
            _draw(self.pool, self.row, min(max(self.size, self.row.size + RESERVE_STEP), self.limit) - self.row.size)
        if self.size > self.row.size:  # past its reservation: reserve a step more (or just enough) first
            try:
                reserve(self.row, min(max(self.size, self.row.size + RESERVE_STEP), self.limit))
            except FileRefused:
                reserve(self.row, self.size)
        self.digest.update(chunk)
        assert self.stream is not None  # noqa: S101 - written after finish() is a programming error
        self.stream.write(chunk)

    def finish(self, *, ready: bool = True) -> RunFile:
        """Close the stream, record its size (what it reserved beyond is released) and sha256, and mark
        the row ready; ``ready=False`` for an upload, which becomes ready when ``attach`` gives it its run
        (until then the pruner treats it as a write in progress, never as a detached file)."""
        self._close()
        self.row.size = self.size
        self.row.sha256 = self.digest.hexdigest()
        self.row.state = FileState.READY if ready else FileState.UPLOADING
        RunFile.objects.filter(pk=self.row.pk).update(size=self.size, sha256=self.row.sha256, state=self.row.state)
        return self.row

    def discard(self) -> None:
        """Forget this file: close what was written, delete its bytes and its row."""
        try:
            self._close()
        except Exception:  # noqa: BLE001 - deleting is what matters now
            logger.warning("closing the partial file %s failed; deleting it", self.row.key, exc_info=True)
        delete_rows([self.row])

    def _close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()


def write_file(
    *,
    organization_id: int,
    origin: str,
    name: str,
    content_type: str,
    chunks: Iterable[bytes],
    limit: int,
    setting: str,
    run_id: Any = None,
    field: str = "",
) -> RunFile:
    """A whole file from ``chunks``: row first, bytes, then ready; nothing kept when refused or failed."""
    check_quota(organization_id, 0)
    row = start_file(
        organization_id=organization_id, origin=origin, name=name, content_type=content_type, field=field, run_id=run_id
    )
    writer = Writer(row, limit=limit, setting=setting)
    try:
        for chunk in chunks:
            writer.write(chunk)  # reserves its bytes against the quota as they come
        return writer.finish()
    except BaseException:
        writer.discard()
        raise


def attach(rows: Iterable[RunFile], run: Run) -> None:
    """The uploaded files belong to ``run`` and are ready from now on (in the transaction that records it)."""
    rows = list(rows)
    RunFile.objects.filter(pk__in=[row.pk for row in rows]).update(run=run, state=FileState.READY)
    for row in rows:
        row.run, row.state = run, FileState.READY


# -- reading -------------------------------------------------------------------
@contextmanager
def open_file(row: RunFile) -> Iterator[IO[bytes]]:
    try:
        stream = storage.file_storage().open(row.key, "rb")
    except FileNotFoundError:
        raise PermanentError(f"the bytes of file {row.name!r} ({row.pk}) are missing from the file storage") from None
    except OSError as exc:
        raise RetryableError(f"the file storage could not be read: {exc}") from None
    try:
        yield stream
    finally:
        stream.close()


def find(organization_id: int, ref: Any, *, field: str) -> RunFile:
    """The ready file of this organization ``ref`` names, or a ``PermanentError`` naming ``field``."""
    pk = file_id(ref, field=field)
    row = RunFile.objects.filter(pk=pk, organization_id=organization_id, state=FileState.READY).first()
    if row is None:
        raise PermanentError(f"{field}: file {pk} does not exist (deleted with its run, or another organization's)")
    return row


@dataclass
class RunFileAccess:
    """``integrations.file_access.FileAccess`` for one step: its organization's files; new ones are its run's."""

    organization_id: int
    run_id: Any = None  # None for a test run: what it writes is detached, deleted by the next prune

    def info(self, ref: Any, *, field: str) -> FileInfo:
        return info_of(find(self.organization_id, ref, field=field))

    @contextmanager
    def open(self, info: FileInfo) -> Iterator[IO[bytes]]:
        with open_file(find(self.organization_id, info.id, field="file")) as stream:
            yield stream

    def read(self, ref: Any, *, field: str, limit: int, setting: str) -> tuple[FileInfo, bytes]:
        row = find(self.organization_id, ref, field=field)
        if row.size > limit:
            raise PermanentError(f"{field}: file {row.name!r} has {row.size} bytes, over the {limit} of {setting}")
        with open_file(row) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise PermanentError(f"{field}: file {row.name!r} is over the {limit} bytes of {setting}")
        return info_of(row), data

    def create(self, *, name: str, content_type: str, chunks: Iterable[bytes], limit: int, setting: str) -> FileInfo:
        try:
            row = write_file(
                organization_id=self.organization_id,
                origin=FileOrigin.STEP,
                name=name,
                content_type=content_type,
                chunks=chunks,
                limit=limit,
                setting=setting,
                run_id=self.run_id,
            )
        except FileRefused as exc:
            raise PermanentError(exc.message) from None
        return info_of(row)

    def store(self, info: FileInfo, path: str) -> str:
        source = find(self.organization_id, info.id, field="config.file")
        try:
            key = storage.stored_key(self.organization_id, path)
        except storage.StoredPathInvalid as exc:
            raise PermanentError(f"config.path: {exc}") from None
        return store_copy(source, key)


def store_copy(source: RunFile, key: str) -> str:
    """Copy ``source`` to ``key`` as a kept file (a repeat overwrites the same key); its location."""
    organization_id = source.organization_id
    assert organization_id is not None  # noqa: S101 - find() only returns an organization's files
    quota = settings.POTAFLOW_FILE_QUOTA_BYTES
    with transaction.atomic():
        if quota > 0:  # the copy's bytes are reserved with its row, under the organization's quota lock
            _lock_quota(organization_id)
            replaced = RunFile.objects.filter(key=key).aggregate(total=Sum("size"))["total"] or 0
            used = used_bytes(organization_id) - replaced
            if used + source.size > quota:
                raise _over_quota(used, source.size, quota)
        # One row per kept key: a repeat (a retry, the same path again) replaces it.
        RunFile.objects.filter(key=key).delete()
        RunFile.objects.create(
            organization_id=organization_id,
            origin=FileOrigin.STORED,
            state=FileState.UPLOADING,
            name=source.name,
            content_type=source.content_type,
            key=key,
            size=source.size,
        )
    digest = hashlib.sha256()
    size = 0
    try:
        with open_file(source) as reader:
            writer = storage.open_for_writing(key)
            try:
                while piece := reader.read(256 * 1024):
                    digest.update(piece)
                    size += len(piece)
                    writer.write(piece)
            finally:
                writer.close()
    except OSError as exc:
        raise RetryableError(f"the file storage could not be written: {exc}") from None
    RunFile.objects.filter(key=key).update(state=FileState.READY, size=size, sha256=digest.hexdigest())
    return storage.location(key)


# -- deleting ------------------------------------------------------------------
def delete_rows(rows: Iterable[RunFile]) -> int:
    """Delete the bytes, then the rows (bytes that cannot be deleted now keep their row for the next pass)."""
    deleted = []
    for row in rows:
        try:
            storage.delete(row.key, unfinished=row.state == FileState.UPLOADING)
        except Exception:  # noqa: BLE001 - storage trouble: the row stays, the next pass tries again
            logger.warning("could not delete file %s from the file storage", row.key, exc_info=True)
            continue
        deleted.append(row.pk)
    if deleted:
        RunFile.objects.filter(pk__in=deleted).delete()
    return len(deleted)


def garbage(now: Any = None) -> Q:
    """Files to delete: detached from their (deleted) run, or a write abandoned past its grace."""
    now = now or timezone.now()
    abandoned_before = now - timedelta(seconds=settings.POTAFLOW_UPLOAD_ABANDONED_SECONDS)
    detached = Q(run__isnull=True, state=FileState.READY) & ~Q(origin=FileOrigin.STORED)
    abandoned = Q(state=FileState.UPLOADING, created_at__lt=abandoned_before)
    orphaned = Q(organization__isnull=True)  # its organization was deleted
    return detached | abandoned | orphaned


def prune_files(*, limit: int = 1000, now: Any = None) -> int:
    """Delete up to ``limit`` garbage files (bytes and rows); how many went."""
    rows = list(RunFile.objects.filter(garbage(now)).order_by("created_at")[:limit])
    return delete_rows(rows)


def hand_over_to_replays(run_ids: list[Any]) -> None:
    """Before runs are deleted: their files go to their newest replay that stays, which still uses them."""
    replays = (
        Run.objects.filter(replay_of__in=run_ids)
        .exclude(pk__in=run_ids)
        .order_by("replay_of_id", "-created_at")
        .values_list("replay_of_id", "pk")
    )
    newest: dict[Any, Any] = {}
    for original, replay in replays:
        newest.setdefault(original, replay)
    for original, replay in newest.items():
        RunFile.objects.filter(run_id=original).update(run_id=replay)
