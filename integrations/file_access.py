"""How an action reads and writes files: the contract (the engine supplies the implementation).

Files live outside the database (``workflows.files``); a template hands an
action a *reference*, ``{{ trigger.files.upload }}`` or
``{{ steps.download.output.file }}``, the object ``{name, size, content_type,
sha256, id}``. An action never opens a path: it asks ``ActionContext.files``
(a ``FileAccess``) for the file the reference names, which answers only for
files of the step's own organization, and only within a byte limit the caller
names (the error names the limit and its setting).

Kept here, in the integrations layer, so that an integration depends on this
contract and not on the workflows package that implements it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .errors import PermanentError
from .storable import JSONValue

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class FileInfo:
    """What a run's payload and a step's output say about a file (never where it is stored)."""

    id: str
    name: str
    size: int
    content_type: str
    sha256: str

    def as_ref(self) -> dict[str, JSONValue]:
        """The reference templates see: ``trigger.files.<field>``, a step's ``output.file``."""
        return {
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256,
            "id": self.id,
        }


def file_id(value: Any, *, field: str) -> str:
    """The file id inside a rendered reference (the object, or its ``id`` alone), or a
    ``PermanentError`` naming ``field`` (e.g. ``config.file``)."""
    candidate = value.get("id") if isinstance(value, dict) else value
    if isinstance(candidate, str) and _UUID.match(candidate.strip()):
        return candidate.strip().lower()
    shown = repr(value)[:120]
    raise PermanentError(
        f"{field}: not a file reference ({shown}); use the object a file template gives, "
        "e.g. {{ trigger.files.<field> }} or {{ steps.<key>.output.file }}"
    )


class FileAccess(Protocol):
    """The files a step may use: its organization's, read and written within limits."""

    def info(self, ref: Any, *, field: str) -> FileInfo:
        """The file ``ref`` names; ``PermanentError`` naming ``field`` when it is not one of
        this organization's files (or was deleted with its run)."""
        ...

    def open(self, info: FileInfo) -> AbstractContextManager[IO[bytes]]:
        """The file's bytes as a stream."""
        ...

    def read(self, ref: Any, *, field: str, limit: int, setting: str) -> tuple[FileInfo, bytes]:
        """The whole file in memory, refused (``PermanentError`` naming ``limit`` and ``setting``)
        when it is larger than ``limit`` bytes."""
        ...

    def create(self, *, name: str, content_type: str, chunks: Iterable[bytes], limit: int, setting: str) -> FileInfo:
        """A new file of this run from ``chunks``, refused past ``limit`` bytes (nothing is kept then)
        or over the organization's quota."""
        ...

    def store(self, info: FileInfo, path: str) -> str:
        """Copy the file to ``path`` in the organization's kept area; its location (``file.store``)."""
        ...


def chunks_of(stream: IO[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """A stream read piece by piece (what ``FileAccess.create`` takes)."""
    while True:
        piece = stream.read(size)
        if not piece:
            return
        yield piece
