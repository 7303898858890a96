"""The Celery application: configured from Django settings (CELERY_* names).

Two worker-process hooks live here because they concern every task:
- each pool child caps its own heap (``POTAFLOW_WORKER_MEMORY_LIMIT_MB``), so
  one run's allocation fails that step with a MemoryError instead of
  swapping the machine or getting the whole worker OOM-killed;
- the database connection is kept across tasks (``CELERY_DB_REUSE_MAX``), and
  Django's own rules retire it when it is too old or broken, as at the start
  of a web request.
"""

import logging
import os
import resource
from functools import cached_property
from typing import Any

from celery import Celery
from celery.signals import task_prerun, worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from core.structured_logging import JsonFormatter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "potaflow.settings")
# Celery's Django fixup runs Django's system checks when a worker imports its
# task modules, and ignores what they find; the URL checks import every URLconf,
# and with it the admin, the API, DRF and drf-spectacular (~20 MiB per worker
# process, bench/README.md "Memory"). `manage.py check` and every web process
# still run them. `celery worker --skip-checks` sets the same variable.
os.environ.setdefault("CELERY_SKIP_CHECKS", "true")

logger = logging.getLogger(__name__)

if settings.LOG_FORMAT == "json":
    # Celery warns (running as root, ...) before it sets up logging: such warnings would be raw text
    # lines among the JSON ones. Route them through logging, as one JSON line each.
    _warnings_handler = logging.StreamHandler()
    _warnings_handler.setFormatter(JsonFormatter())
    logging.getLogger("py.warnings").addHandler(_warnings_handler)
    logging.getLogger("py.warnings").propagate = False
    logging.captureWarnings(True)


class PotaFlowCelery(Celery):
    @cached_property
    def Worker(self) -> Any:  # noqa: N802 - Celery's name
        """``celery worker``'s class: a pool that grows with the backlog (potaflow.celery_worker)."""
        from .celery_worker import Worker  # here: web and beat do not load Celery's worker machinery

        return self.subclass_with_self(Worker)


app = PotaFlowCelery("potaflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect(dispatch_uid="potaflow-memory-ceiling")
def limit_pool_child_memory(**kwargs: Any) -> None:
    limit_mb = int(settings.POTAFLOW_WORKER_MEMORY_LIMIT_MB)
    if limit_mb <= 0:
        return
    limit = limit_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    logger.info("pool child %d: heap limited to %d MiB", os.getpid(), limit // (1024 * 1024))


@task_prerun.connect(dispatch_uid="potaflow-db-connection-health")
def retire_old_connections(task: Any = None, **kwargs: Any) -> None:
    # A task applied in-process (``.apply()``) runs inside its caller's
    # connection and transaction, which are not ours to close.
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


_heartbeat: dict[str, Any] = {}


@worker_ready.connect(dispatch_uid="potaflow-worker-heartbeat")
def start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    # Imported here: the models are not loaded when this module is (it is imported by settings' users).
    from workflows.ops import heartbeat

    name = getattr(sender, "hostname", None) or f"celery@{os.uname().nodename}"
    _heartbeat.update(name=name, stop=heartbeat.start(name))


@worker_shutdown.connect(dispatch_uid="potaflow-worker-heartbeat-stop")
def stop_heartbeat(**kwargs: Any) -> None:
    # Imported here: as above.
    from workflows.ops import heartbeat

    if "stop" in _heartbeat:
        _heartbeat["stop"].set()
        heartbeat.forget(_heartbeat["name"])
