"""The file storage (``STORAGES["potaflow_files"]``, built from ``POTAFLOW_FILE_STORAGE``) and its keys.

Keys are made up here, never from a name a sender chose: an upload or a
step's file is ``org-<id>/files/<uuid>``; a file ``file.store`` keeps is
``org-<id>/stored/<path>``, its path cleaned by ``stored_key`` (relative, no
``..``, no empty or dot segments, printable characters only, NFKC-normalized
first so no look-alike becomes a separator or a dot later; at most
``MAX_STORED_PATH`` bytes of UTF-8 and ``MAX_SEGMENT`` per segment, what S3 keys
and local file names both hold).
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from typing import IO, Any, cast

from django.conf import settings
from django.core.files.storage import Storage, storages

ALIAS = "potaflow_files"
MAX_STORED_PATH = 512  # bytes of UTF-8: with the storage's prefix, well under S3's 1024-byte keys
MAX_SEGMENT = 255  # bytes of UTF-8: the longest file name local disks take
_UNSAFE = re.compile(r"[^\w.\- ]", re.UNICODE)


class StoredPathInvalid(ValueError):  # noqa: N818 - reads as a state, part of the API
    """A ``file.store`` path that cannot name a file (empty, too long, ``..``)."""


def file_storage() -> Storage:
    return storages[ALIAS]


def is_s3() -> bool:
    return settings.STORAGES[ALIAS]["BACKEND"].startswith("storages.")


def upload_key(organization_id: int, file_id: uuid.UUID | str) -> str:
    return f"org-{organization_id}/files/{file_id}"


def stored_key(organization_id: int, path: str) -> str:
    """``org-<id>/stored/<path>`` for a path a template rendered (untrusted)."""
    parts = []
    for raw in unicodedata.normalize("NFKC", path).replace("\\", "/").split("/"):
        segment = _UNSAFE.sub("_", "".join(ch for ch in raw if ch.isprintable())).strip(" ")
        if segment in ("", "."):
            continue
        if segment == "..":
            raise StoredPathInvalid(f"{path!r} climbs out of its folder ('..' is not allowed)")
        if len(segment.encode()) > MAX_SEGMENT:
            raise StoredPathInvalid(f"a folder or file name of the path is longer than {MAX_SEGMENT} bytes")
        parts.append(segment)
    cleaned = "/".join(parts)
    if not cleaned:
        raise StoredPathInvalid(f"{path!r} names no file")
    if len(cleaned.encode()) > MAX_STORED_PATH:
        raise StoredPathInvalid(f"the path is longer than {MAX_STORED_PATH} bytes (UTF-8)")
    return f"org-{organization_id}/stored/{cleaned}"


def open_for_writing(key: str) -> IO[bytes]:
    """A writable stream at ``key``: S3 streams it as a multipart upload; local disk writes the file.

    ``Storage.open(key, "wb")`` is the storage API's streaming write; a local
    folder must exist first (FileSystemStorage creates folders only in ``save``).
    """
    storage = file_storage()
    if not is_s3():
        os.makedirs(os.path.dirname(storage.path(key)), exist_ok=True)
    return cast(IO[bytes], storage.open(key, "wb"))


def location(key: str) -> str:
    """Where ``key`` is, for people: ``s3://bucket/prefix/key`` or the local path."""
    storage: Any = file_storage()
    if is_s3():
        prefix = f"{storage.location.strip('/')}/" if storage.location else ""
        return f"s3://{storage.bucket_name}/{prefix}{key}"
    return str(storage.path(key))


def describe() -> str:
    """The storage in one line, for potaflow_status (no credentials)."""
    storage: Any = file_storage()
    if is_s3():
        where = f"s3://{storage.bucket_name}/{storage.location or ''}".rstrip("/")
        return f"{where} (endpoint {storage.endpoint_url or 'AWS'})"
    return f"local disk {storage.location}"


def delete(key: str, *, unfinished: bool = False) -> None:
    """Delete the object at ``key`` (nothing there is fine); for a write that never finished, its
    S3 multipart upload too (one listing call, so only then)."""
    storage: Any = file_storage()
    storage.delete(key)
    if unfinished and is_s3():
        # A web process killed mid-upload leaves its multipart upload open: parts without an object.
        name = storage._normalize_name(key)  # the key with the storage's prefix, as S3File uses it
        for upload in storage.bucket.multipart_uploads.filter(Prefix=name):
            if upload.object_key == name:
                upload.abort()
