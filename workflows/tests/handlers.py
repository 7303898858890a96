"""Handlers for the engine tests (registered in the worker via POTAFLOW_HANDLER_MODULES).

Each call appends a JSON line to ``data["log"]`` (a file the test chose), so a
test counts calls and measures the gaps between attempts across processes.
"""

import json
import os
import signal
import time
from pathlib import Path

from django.db import connection

from integrations.custom.handlers import handler
from integrations.errors import PermanentError, RetryableError


def _log_call(data, ctx) -> int:
    """Record the call; return how many calls came before it."""
    path = Path(data["log"])
    previous = len(path.read_text().splitlines()) if path.exists() else 0
    with path.open("a") as fh:
        fh.write(json.dumps({"t": time.time(), "attempt": ctx.attempt, "pid": os.getpid(), "run": str(ctx.run_id)}))
        fh.write("\n")
    return previous


@handler("test.echo")
def echo(data, ctx):
    _log_call(data, ctx)
    return {"input": {k: v for k, v in data.items() if k != "log"}, "attempt": ctx.attempt}


@handler("test.flaky")
def flaky(data, ctx):
    """Retryable failure for the first ``fail_times`` calls, then success."""
    previous = _log_call(data, ctx)
    if previous < data.get("fail_times", 2):
        raise RetryableError(f"flaky: call {previous + 1} fails", retry_after=data.get("retry_after"))
    return {"calls": previous + 1}


@handler("test.boom")
def boom(data, ctx):
    _log_call(data, ctx)
    raise PermanentError("boom: the remote said no (HTTP 422)")


@handler("test.crash")
def crash(data, ctx):
    _log_call(data, ctx)
    return {"ratio": 1 / 0}


@handler("test.slow", repeat_safe=True)
def slow(data, ctx):
    """Sleeps on the first call only (the one a test kills), then returns quickly."""
    previous = _log_call(data, ctx)
    if previous == 0:
        time.sleep(data.get("seconds", 5))
    return {"calls": previous + 1}


@handler("test.big")
def big(data, ctx):
    return {"blob": "x" * data["size"]}


@handler("test.unstorable")
def unstorable(data, ctx):
    """An output PostgreSQL's jsonb refuses as is: NUL, NaN, Infinity."""
    _log_call(data, ctx)
    return {"text": "a\x00b", "nan": float("nan"), "inf": float("inf"), "a\x00key": 1}


@handler("test.too_deep")
def too_deep(data, ctx):
    """An output nested deeper than Python can encode."""
    _log_call(data, ctx)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    return {"deep": deep}


@handler("test.kill_self", repeat_safe=True)
def kill_self(data, ctx):
    """Dies with its pool process (as when it runs out of memory), every time."""
    _log_call(data, ctx)
    os.kill(os.getpid(), signal.SIGKILL)


@handler("test.slow_once")
def slow_once(data, ctx):
    """As test.slow, but not declared repeat-safe: a lost attempt of it is in doubt."""
    previous = _log_call(data, ctx)
    if previous == 0:
        time.sleep(data.get("seconds", 5))
    return {"calls": previous + 1}


@handler("test.sleep", repeat_safe=True)
def sleep(data, ctx):
    """Waits ``seconds`` on every call (a step holding a worker slot without using the CPU)."""
    _log_call(data, ctx)
    time.sleep(data.get("seconds", 1))
    return {"slept": data.get("seconds", 1)}


@handler("test.burn")
def burn(data, ctx):
    """Busy CPU for ``seconds`` (a tenant's heavy step)."""
    _log_call(data, ctx)
    deadline = time.monotonic() + data["seconds"]
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return {"spins": spins}


@handler("test.hog")
def hog(data, ctx):
    """Keeps allocating 1 KiB strings, as a list.append loop would, up to ``mib``."""
    _log_call(data, ctx)
    hoard = []
    for _ in range(data["mib"] * 1024):
        hoard.append(os.urandom(16).hex() * 32)
    return {"kept": len(hoard)}


@handler("test.backend_pid")
def backend_pid(data, ctx):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return {"pid": cursor.fetchone()[0], "worker_pid": os.getpid()}


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
