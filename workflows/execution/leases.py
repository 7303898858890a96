"""Leases on running steps: how a dead worker is noticed in seconds.

Claiming a step sets ``StepRun.lease_expires_at`` to now + the lease
(``POTAFLOW_STEP_LEASE_SECONDS``). While the attempt runs, one thread per
worker process renews the leases of the attempts that process holds, every
third of the lease. A worker that dies (SIGKILL, OOM, lost host) stops
renewing; once the lease lapses the recovery sweeper sends the step again and
the new message takes it over. A renewal only touches a step still held by
the same attempt, so it never revives a step someone else took over.
"""

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone

from ..models import StepRun, StepRunStatus
from .policy import lease_seconds

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the leases held by this process. Started lazily, once per process (fork-safe)."""

    def __init__(self) -> None:
        self._held: dict[int, int] = {}  # StepRun pk -> attempt number
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @contextmanager
    def holding(self, step_run_pk: int, attempt: int) -> Iterator[None]:
        """Keep the lease of ``step_run_pk`` (attempt ``attempt``) alive for the duration of the block."""
        with self._lock:
            self._held[step_run_pk] = attempt
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(step_run_pk) == attempt:
                    del self._held[step_run_pk]

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()  # after a fork the parent's thread does not exist here
        self._thread = threading.Thread(target=self._run, name="potaflow-lease-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        while True:
            stop.wait(max(lease_seconds() / 3.0, 0.2))
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                close_old_connections()
                self.renew(held)
            except Exception:  # noqa: BLE001 - a failed renewal is retried next round; the lease has slack
                logger.exception("could not renew step leases %s", sorted(held))

    @staticmethod
    def renew(held: dict[int, int]) -> None:
        until = timezone.now() + timedelta(seconds=lease_seconds())
        for pk, attempt in held.items():
            StepRun.objects.filter(pk=pk, status=StepRunStatus.RUNNING, attempts=attempt).update(lease_expires_at=until)


keeper = LeaseKeeper()
