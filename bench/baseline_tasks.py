"""The execution baseline: a plain Celery task doing one SELECT, one UPDATE and one HTTP POST per message.

Started by bench/execution.py as ``celery --workdir bench -A baseline_tasks worker``
with PotaFlow's worker settings (acks late, prefetch 1, JSON, the same pool: autoscaled between
POTAFLOW_WORKER_MIN_CONCURRENCY and POTAFLOW_WORKER_CONCURRENCY, potaflow/worker_pool.py);
``BENCH_BASELINE_DSN``, ``CELERY_BROKER_URL`` and ``BENCH_SINK_URL`` say where to work.
"""

import os
import sys
import time
from pathlib import Path

import psycopg
import requests
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import worker_pool  # noqa: E402

app = Celery("baseline", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=int(os.environ.get("POTAFLOW_WORKER_PREFETCH_MULTIPLIER", "1")),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_concurrency=int(os.environ.get("POTAFLOW_WORKER_CONCURRENCY", worker_pool().DEFAULT_CONCURRENCY)),
    worker_hijack_root_logger=False,
)
_state: dict = {}


@app.task(name="baseline.step")
def step(item_id: int) -> None:
    started = time.time()
    if "conn" not in _state:
        _state["conn"] = psycopg.connect(os.environ["BENCH_BASELINE_DSN"])
        _state["http"] = requests.Session()
    conn = _state["conn"]
    with conn.cursor() as cur:
        cur.execute("SELECT payload FROM bench_baseline_item WHERE id = %s", [item_id])
        payload = cur.fetchone()[0]
        response = _state["http"].post(os.environ["BENCH_SINK_URL"], json=payload, timeout=10)
        cur.execute(
            "UPDATE bench_baseline_item SET status = %s, started_at = to_timestamp(%s), finished_at = clock_timestamp()"
            " WHERE id = %s",
            [response.status_code, started, item_id],
        )
    conn.commit()
