"""The worker's pool as the Procfile starts it: it grows while messages wait, up to its concurrency, and
shrinks back when idle (potaflow/worker_pool.py). Steps that wait on other services must not queue
behind a pool the size of the machine's cores."""

import time

import pytest

from potaflow.worker_pool import autoscale_bounds
from testing.worker import IsolatedBroker, ProcfileWorkerProcess, wait_for, wait_for_run
from workflows.services import run_accept, workflow_create
from workflows.tests.handlers import calls


def test_the_pool_grows_between_the_minimum_and_the_concurrency():
    assert autoscale_bounds(16, 2) == (16, 2)
    assert autoscale_bounds(4, 0) == (4, 1)  # at least one process
    assert autoscale_bounds(2, 2) is None  # the tests' workers (-c 2): a fixed pool
    assert autoscale_bounds(2, 8) is None


@pytest.mark.slow
def test_the_procfile_worker_grows_its_pool_for_a_backlog_and_shrinks_it_when_idle(org, tmp_path, transactional_db):
    logs = [tmp_path / f"s{i}.jsonl" for i in range(6)]
    flows = [
        workflow_create(
            organization=org,
            name=f"Sleep {i}",
            steps=[
                {
                    "key": "sleep",
                    "action_type": "custom",
                    "config": {"handler": "test.sleep", "input": {"log": str(log), "seconds": 3}},
                }
            ],
        )
        for i, log in enumerate(logs)
    ]
    env = {"POTAFLOW_WORKER_CONCURRENCY": "4", "POTAFLOW_WORKER_MIN_CONCURRENCY": "1", "AUTOSCALE_KEEPALIVE": "2"}
    with IsolatedBroker() as broker:
        worker = ProcfileWorkerProcess({**broker.env, **env})
        worker.start()
        try:
            assert len(worker.pool_processes()) == 1, worker.pool_processes()  # idle: the minimum
            runs = [run_accept(workflow=wf, trigger="manual", payload={})[0] for wf in flows]
            seen = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(calls(log) for log in logs):
                seen = max(seen, len(worker.pool_processes()))
                time.sleep(0.1)
            runs = [wait_for_run(r.pk, {"succeeded", "failed"}, timeout=60, worker=worker) for r in runs]
            # Idle again: back to the minimum after AUTOSCALE_KEEPALIVE (the autoscaler looks every second).
            wait_for(lambda: len(worker.pool_processes()) == 1, timeout=30, message="the pool to shrink back")
        finally:
            worker.stop()
    assert [r.status for r in runs] == ["succeeded"] * 6
    assert seen == 4, f"the pool reached {seen} processes, not its concurrency (4)"
    starts = sorted(calls(log)[0]["t"] for log in logs)
    # Four at once: the fourth started while the first still slept (one process was there, three were
    # forked for the backlog); the fifth only when a process was free again.
    assert starts[3] - starts[0] < 3.0, starts
    assert starts[4] - starts[0] >= 2.9, starts
    assert "Scaling up 3 processes" in worker.log_text() or worker.log_text().count("Scaling up") >= 3
