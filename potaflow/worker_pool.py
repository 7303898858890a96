"""How many pool processes a worker runs: it grows with its backlog, shrinks back when idle.

Steps mostly wait on other services (an HTTP call, an SMTP server, an API):
a pool the size of the machine's cores spends a backlog waiting. The chaos
flow plan (bench/README.md, 1,000 runs of five calls each, a quarter of them
0.2-1 s) settled 420 s after its last fault with 2 processes, 93 s with 8 and
35 s with a pool that grows to 16 -- while a fixed pool of 16 idles at ~1.2 GiB
more than one of 2. So every ``celery -A potaflow worker`` (the Procfile, compose,
the image) runs Celery's autoscaler between ``POTAFLOW_WORKER_MIN_CONCURRENCY``
processes and its concurrency (``POTAFLOW_WORKER_CONCURRENCY``, or ``-c``):
new processes are forked as soon as messages wait for one, idle ones stop after
``AUTOSCALE_KEEPALIVE`` (Celery's, 30 s) without a new message. A command line
that says ``--autoscale`` keeps its own; a minimum at or above the concurrency
is a fixed pool (the tests' workers: ``-c 2``).

The prefetch follows the maximum (Celery sets it so), so the processes grow
as soon as a backlog exists; each process still takes one message at a time.

This module holds the rule and its defaults (settings.py imports it: keep it free of imports);
``potaflow.celery_worker`` applies it to the worker.
"""

# The defaults, in one place: settings.py reads them (its POTAFLOW_* variables override them), and
# the bench scripts report and size their baseline with them.
DEFAULT_CONCURRENCY = 16
DEFAULT_MIN_CONCURRENCY = 2


def autoscale_bounds(concurrency: int, minimum: int) -> tuple[int, int] | None:
    """Celery's ``--autoscale`` (max, min) for a pool of at most ``concurrency``; None: a fixed pool."""
    minimum = max(1, minimum)
    if concurrency <= minimum:
        return None
    return concurrency, minimum
