"""The embedded default broker: kombu's filesystem transport, with whole messages only.

kombu's filesystem transport creates a message file, then writes it; a
consumer polling the folder may move the file away between the two and read
it empty. The worker then dies on the JSON error ("Unrecoverable error",
consumer stopped) and the message is gone: a run that stays queued for ever,
seen in CI as a worker that stopped consuming. Here a message is written under
a name no consumer looks at and renamed into place (a rename in one folder is
atomic), so a consumer sees the whole file or none. A file that still cannot be
read (written by something else, a full disk) is moved to ``corrupt/`` beside
the queue folder and logged with its name: kept for a person, never fatal to
the worker, never dropped silently. A consumer claims a message by renaming it
into ``claimed/`` beside the queue folder, not (as kombu does) by moving it to
the system temp folder, which may be another file system.

``CELERY_BROKER_TRANSPORT`` names this class when the broker URL is
``filesystem://`` (settings); everything else about the transport (folders,
polling, fan-out, ``driver_type``) is kombu's.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"  # a name the consumer skips: it only takes "<id>.<queue>.msg"
CLAIMED_FOLDER = "claimed"  # beside the queue folder: the same file system, so a rename is atomic
CORRUPT_FOLDER = "corrupt"


class Channel(filesystem.Channel):
    # The stubs of kombu's two bases disagree on the parameter's name (message, payload).
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        """Write the message under a hidden name, then rename it into the queue folder."""
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb", buffering=0) as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """Claim the oldest message of ``queue`` by renaming it out of the folder, then read it.

        kombu moves the file to the system temp folder, which may be another file
        system (a copy, not an atomic rename, so two consumers can both take it);
        here the claim is a rename into ``claimed/`` beside the queue folder.
        """
        wanted = f"{queue}.msg"
        claimed_folder = Path(self.data_folder_in).parent / CLAIMED_FOLDER
        claimed_folder.mkdir(exist_ok=True)
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = claimed_folder / filename
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)
            except OSError:
                continue  # another consumer took it first
            try:
                payload = claimed.read_bytes()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {str(claimed)!r} from queue.") from exc
            try:
                message = loads(bytes_to_str(payload))
            except ValueError as exc:  # not a whole message: keep it for a person, go on
                self._set_aside(claimed, queue, exc)
                continue
            if self.store_processed:
                os.replace(claimed, Path(self.processed_folder) / filename)
            else:
                claimed.unlink(missing_ok=True)
            return message
        raise Empty()

    def _set_aside(self, claimed: Path, queue: str, exc: Exception) -> None:
        folder = claimed.parent.parent / CORRUPT_FOLDER
        folder.mkdir(exist_ok=True)
        os.replace(claimed, folder / claimed.name)
        logger.error(
            "an unreadable message in the %r queue was moved to %s (%s); the worker goes on",
            queue,
            folder / claimed.name,
            exc,
        )


class Transport(filesystem.Transport):
    Channel = Channel
