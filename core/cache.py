"""The embedded default cache: Django's file cache, with counters that are atomic.

Why: the login throttle reserves an attempt by incrementing a counter and
comparing the result (``accounts.login_throttle``). Django's ``FileBasedCache``
increments by reading the file and writing it back, so concurrent requests (16
threads per gunicorn worker, several workers) read the same count and all get
in. Here ``add`` and ``incr`` (and ``decr``, which calls ``incr``) hold an
exclusive lock on one file of the cache folder: atomic across the threads and
processes of one machine, which is what the file cache is for. Redis
(``CACHE_URL=redis://``) increments atomically by itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from django.core.cache.backends.filebased import FileBasedCache

LOCK_NAME = ".potaflow-counters.lock"


class LockingFileBasedCache(FileBasedCache):
    def __init__(self, dir: str, params: dict[str, Any]) -> None:  # noqa: A002 - Django's own parameter name
        super().__init__(dir, params)
        self._lock_path = os.path.join(os.path.abspath(dir), LOCK_NAME)

    @contextlib.contextmanager
    def _counter_lock(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self._lock_path), exist_ok=True)
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def add(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> bool:
        with self._counter_lock():
            return super().add(key, value, timeout, version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        with self._counter_lock():
            return super().incr(key, delta, version)
