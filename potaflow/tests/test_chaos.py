"""Reduced chaos run: ``bench/chaos.py`` with 200 events must lose no run and duplicate no effect,
on Redis and on RabbitMQ (a ``rabbitmq-server`` node of its own: its restart keeps the quorum
queues' messages, its "flush" purges both queues, its "blip" closes every client connection).

The script starts its own stack (gunicorn, Celery worker and beat, a
``redis-server`` of its own on a free port, database ``potaflow_chaos_ci_<pid>``
created and dropped), sends 200 signed webhooks while it SIGKILLs the
worker 5 times, one pool child and one gunicorn worker, restarts the broker
and wipes it, then waits up to 240 s for every accepted run to be final. With
the default recovery settings, so the settle time it prints is the one a
deployment gets. Every process of the stack runs with the test socket guard:
traffic beyond loopback fails the test. See bench/README.md.

Wall time: about 1 min to start, send and fault, plus the settle time (at
most 240 s; the test fails when the runs do not settle in time).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.registry import all_actions
from testing import network

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(480)]

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# The script drops and recreates it: a name of this process's own, so two CI jobs on one server never collide.
DATABASE_URL = os.environ.get(
    "CHAOS_CI_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/potaflow_chaos_ci_{os.getpid()}"
)
SETTLE_TIMEOUT = 240


def _postgres_reachable() -> bool:
    import psycopg

    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _last_json_line(output: str) -> dict:
    for line in reversed(output.splitlines()):
        if line.startswith('{"chaos"'):
            return json.loads(line)
    raise AssertionError(f"bench/chaos.py printed no JSON report:\n{output[-6000:]}")


# CI runs two of the four combinations (time): the flow plan on Redis (branch, a loop with parallel
# iterations, transforms in process and an http effect per item: the straight run path and the tree's),
# and the straight plan on RabbitMQ. `bench/chaos.py [--flow] [--broker amqp]` runs any of them.
@pytest.mark.parametrize(("broker", "flow"), [("amqp", False), ("redis", True)], ids=["amqp", "redis-flow"])
def test_no_run_lost_and_no_effect_duplicated_under_faults(broker, flow):
    """``flow``: branch + for_each (5 items, parallel 2) + http.request, an effect per item (issue 19)."""
    if flow and "for_each" not in all_actions():
        pytest.skip("needs the flow-control engine of issue 19")
    server = "rabbitmq-server" if broker == "amqp" else "redis-server"
    if shutil.which(server) is None:
        pytest.skip(f"{server} is not installed: the chaos run starts one of its own")
    if not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {DATABASE_URL.rsplit('/', 1)[0]}")
    guard = network.worker_network_guard_env()  # the script, web, worker and beat refuse non-loopback traffic
    command = [
        sys.executable, str(BASE_DIR / "bench" / "chaos.py"),
        "--events", "200", "--assert", "--settle-timeout", str(SETTLE_TIMEOUT),
        "--database-url", DATABASE_URL, "--broker", broker,
        "--env", f"{network.GUARD_LOG_ENV}={guard[network.GUARD_LOG_ENV]}",
        *(["--flow"] if flow else []),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=BASE_DIR,
        env={**os.environ, **guard},
        capture_output=True,
        text=True,
        timeout=SETTLE_TIMEOUT + 200,
    )
    output = result.stdout + result.stderr
    report = _last_json_line(output)
    print(
        f"chaos ({broker}{', flow' if flow else ''}, 200 events, {len(report['faults'])} faults): "
        "settle after the last fault "
        f"{report['settle_after_last_fault_s']} s, lost {report['lost']}, duplicate effects "
        f"{report['duplicate_effects']}, raw deliveries {report['raw_deliveries']}, "
        f"repeats absorbed by the key {report['repeats_absorbed_by_key']}, runs {report['runs_by_status']}"
    )
    summary = output[-8000:]
    assert report["accepted"] == 200, summary
    assert report["lost"] == 0, f"{report['lost']} accepted run(s) not final after {SETTLE_TIMEOUT} s\n{summary}"
    assert report["duplicate_effects"] == 0, f"{report['duplicate_effects']} effect(s) applied twice\n{summary}"
    if flow:  # every item of every succeeded run had its effect
        assert report["succeeded_without_effect"] == 0, summary
    assert result.returncode == 0, summary
