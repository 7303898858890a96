"""gunicorn settings of the web process: ``gunicorn --config python:potaflow.gunicorn_config ...``.

Prometheus multiprocess mode. gunicorn runs several worker processes and a
scrape reaches one of them; the counters only the web process knows
(webhook refusals, intake latency: ``workflows.metrics``) must add up over
all of them. Each worker writes its counts to files in
``PROMETHEUS_MULTIPROC_DIR`` (default ``$POTAFLOW_VAR_DIR/prometheus``) and
the worker answering ``/metrics`` sums the folder. The folder is emptied when
gunicorn starts (counts of a previous run would otherwise be added again,
and a crashed run's files could be unreadable) and a worker that exits is
marked dead. It is set here, in the master, before any worker imports
prometheus_client, which reads it once at import. One folder per host:
never share it between hosts or between two gunicorn masters.

The settings file ``.env`` is read first, as ``potaflow.settings`` reads it,
so a folder chosen there is the one both the master and the workers use.
"""

import os
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

_var_dir = Path(os.environ.get("POTAFLOW_VAR_DIR") or BASE_DIR / "var")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var_dir / "prometheus"))

logger_class = "potaflow.gunicorn_logging.RedactingLogger"


def on_starting(server: Any) -> None:
    """Empty the multiprocess folder before the first worker starts."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges stop counting (its counters and histograms stay summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
