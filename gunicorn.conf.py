"""gunicorn configuration for PotaFlow's web process (Procfile, `make run`, Dockerfile, compose).

Why threads: with sync workers each request holds a whole worker process
while its body arrives, so two clients trickling an upload made the site
unreachable. ``gthread`` workers serve ``threads`` requests each; a connection
only takes a thread once it has sent data, and ``potaflow.wsgi`` gives every
request body a deadline (``POTAFLOW_WEB_BODY_TIMEOUT``), so slow clients hold a
thread for a bounded time and /healthz keeps answering. For an internet-facing
deployment still put a buffering reverse proxy (nginx, a cloud load balancer)
in front: it absorbs slow clients entirely.

Every value can be changed through the environment (documented in .env.example);
command-line flags win over this file.
"""

import os

# gunicorn reads this module itself; settings.py is not loaded here.
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
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
