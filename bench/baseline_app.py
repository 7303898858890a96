"""The limit baseline for intake: one INSERT+COMMIT (psycopg) and one Redis LPUSH per request.

Served by gunicorn with PotaFlow's own gunicorn.conf.py (bench/intake.py);
``BENCH_BASELINE_DSN`` and ``BENCH_BASELINE_REDIS`` say where to write.
"""

import os
import threading

import psycopg
import redis

_local = threading.local()
_redis = redis.Redis.from_url(os.environ["BENCH_BASELINE_REDIS"])


def app(environ, start_response):  # noqa: ANN001, ANN201 - plain WSGI
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b"{}"
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg.connect(os.environ["BENCH_BASELINE_DSN"])
    with conn.cursor() as cur:
        cur.execute("INSERT INTO bench_baseline_event (payload) VALUES (%s) RETURNING id", [body.decode()])
        event_id = cur.fetchone()[0]
    conn.commit()
    _redis.lpush("bench:baseline", event_id)
    out = b'{"run_id": "%d"}' % event_id
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
