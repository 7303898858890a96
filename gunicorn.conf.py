"""gunicorn configuration for PotaFlow's web process (Procfile, `make run`, Dockerfile, compose).

Why threads, and why buffered: with sync workers each request holds a whole
worker process while its body arrives, and with plain ``gthread`` a thread
parses headers and body with blocking reads, so 32 clients sending one header
line every two seconds held every thread and /healthz went unanswered.
``potaflow.web_worker.BufferingWorker`` is ``gthread`` whose main loop reads
each request whole (header deadline ``POTAFLOW_WEB_HEADER_TIMEOUT``, body
deadline ``POTAFLOW_WEB_BODY_TIMEOUT``, body limit, per-address connection
cap) before a thread of the pool takes it: slow clients hold no thread at all.
For an internet-facing deployment still put a buffering reverse proxy (nginx,
a cloud load balancer; deploy/nginx/) in front: it also terminates TLS.

Prometheus multiprocess mode: a scrape reaches one worker, but the counters
only the web process knows (webhook refusals, intake latency:
``workflows.ops.metrics``) must add up over all of them. Each worker writes its
counts to files in ``PROMETHEUS_MULTIPROC_DIR`` (default
``$POTAFLOW_VAR_DIR/prometheus``), emptied when gunicorn starts (a previous
run's counts would be added again), and a worker that exits is marked dead.
It is set here, in the master, before any worker imports prometheus_client,
which reads it once at import. One folder per host and per gunicorn master.

Every value can be changed through the environment (documented in .env.example);
command-line flags win over this file.
"""

import os
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent
# .env first, as potaflow.settings reads it, so the master and the workers agree on the folder.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(Path(os.environ.get("POTAFLOW_VAR_DIR") or BASE_DIR / "var") / "prometheus")
)
# Only now: prometheus_client picks its value class (files or memory) when it is first imported, and the
# workers fork from this master with it already imported (imported above the variable, they counted in
# memory and the scrape, which reads the files, lost the web side: issue 17).
from prometheus_client import multiprocess  # noqa: E402

# gunicorn reads this module itself; settings.py is not loaded here.
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, with every request read whole (headers and body, within deadlines and limits) by the worker's
# main loop before a thread takes it: slow clients hold no thread (potaflow/web_worker.py).
worker_class = "potaflow.web_worker.BufferingWorker"
# Requests served at once per worker. Each thread may hold a database connection (CONN_MAX_AGE):
# keep workers x threads x web containers below PostgreSQL's max_connections.
threads = int(os.environ.get("POTAFLOW_WEB_THREADS", "16"))
# A worker whose main loop is stuck this long is restarted.
timeout = int(os.environ.get("POTAFLOW_WEB_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("POTAFLOW_WEB_GRACEFUL_TIMEOUT", "20"))
# Idle keep-alive connections are closed after this many seconds.
keepalive = int(os.environ.get("POTAFLOW_WEB_KEEPALIVE", "5"))
# Bounded request line and headers (gunicorn's defaults, stated).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
# Masks /hooks/<token> and secret query values: the token is the capability to trigger runs.
logger_class = "potaflow.gunicorn_logging.RedactingLogger"


def on_starting(server: Any) -> None:
    """Empty the multiprocess folder before the first worker starts."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges stop counting (its counters and histograms stay summed)."""
    multiprocess.mark_process_dead(worker.pid)
