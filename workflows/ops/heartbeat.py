"""Worker heartbeats: each Celery worker says it is alive and how much memory it holds.

Why: workers have no HTTP port, and ``/metrics`` is answered by any web
process on any host, so what it reports about workers must be in the
database. The worker's main process (``potaflow.celery``, at ``worker_ready``)
starts one thread that writes its ``WorkerHeartbeat`` row every
``POTAFLOW_WORKER_HEARTBEAT_SECONDS``: resident memory of the main process and
its pool children (from /proc). A worker that stops cleanly deletes its row; a
killed one stops writing, and after three intervals its row no longer counts.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connections
from django.utils import timezone

from ..models import WorkerHeartbeat

logger = logging.getLogger(__name__)

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def beat_once(name: str) -> None:
    """Write this worker's row now (main process + pool children)."""
    pid = os.getpid()
    processes = [pid, *_children(pid)]
    WorkerHeartbeat.objects.update_or_create(
        name=name,
        defaults={
            "pid": pid,
            "rss_bytes": sum(_rss(p) for p in processes),
            "processes": len(processes),
            "seen_at": timezone.now(),
        },
    )


def interval() -> float:
    return max(1.0, float(settings.POTAFLOW_WORKER_HEARTBEAT_SECONDS))


def start(name: str) -> threading.Event:
    """Start the heartbeat thread of worker ``name``; set the returned event to stop it."""
    stop = threading.Event()

    def run() -> None:
        while True:
            try:
                beat_once(name)
            except (DatabaseError, InterfaceError) as exc:  # the database is away: try next round
                logger.warning("worker heartbeat: %s: %s", type(exc).__name__, exc)
            finally:
                # No connection kept between beats: the main process forks pool children (a child
                # replaced after its task), and a child must not inherit an open database socket.
                connections.close_all()
            if stop.wait(interval()):
                return

    threading.Thread(target=run, name="potaflow-heartbeat", daemon=True).start()
    return stop


def forget(name: str) -> None:
    """A clean stop: the worker is gone, not silent."""
    try:
        close_old_connections()
        WorkerHeartbeat.objects.filter(name=name).delete()
    except (DatabaseError, InterfaceError):
        logger.warning("worker heartbeat: could not remove %s; it expires by itself", name)


def alive() -> list[WorkerHeartbeat]:
    """Workers heard from within three intervals."""
    since = timezone.now() - timedelta(seconds=3 * interval())
    return list(WorkerHeartbeat.objects.filter(seen_at__gte=since).order_by("name"))
