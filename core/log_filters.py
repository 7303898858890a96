"""Keep idle logs quiet: beat's periodic housekeeping left three lines every 5 s.

Celery logs, at INFO, each message beat sends ("Scheduler: Sending due task ..."),
each message a worker receives ("Task ... received") and each task that ends
("Task ... succeeded in ..."). For the housekeeping tasks beat runs on a timer —
the recovery sweeper every ``POTAFLOW_RECOVERY_INTERVAL_SECONDS``, token flushing,
pruning, failure digests — those lines were more than half of all lines of an
idle install. ``HousekeepingFilter`` drops exactly those INFO lines; the tasks
log what they did themselves when they did something, and their failures
(WARNING and above) still show.
"""

import logging

HOUSEKEEPING_TASKS = (
    "workflows.recover_stalled_runs",
    "accounts.flush_expired_tokens",
    "workflows.prune_runs",
    "workflows.send_failure_digests",
)
CELERY_LIFECYCLE_LOGGERS = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})


class HousekeepingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in CELERY_LIFECYCLE_LOGGERS:
            return True
        message = record.getMessage()
        return not any(task in message for task in HOUSEKEEPING_TASKS)
