"""Idle logs: with LOG_FORMAT=json every line of beat and the worker is JSON, and beat's housekeeping
(the recovery sweeper every few seconds) writes no line unless it has something to say."""

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Organization
from testing.worker import BASE_DIR, subprocess_env, wait_for_run
from workflows import services
from workflows.models import Run, TriggerType

pytestmark = pytest.mark.slow


def test_the_sweeper_runs_silently_and_every_line_is_json(celery_worker, tmp_path):
    org = Organization.objects.create(name="Quiet", slug="quiet")
    workflow = services.workflow_create(
        organization=org,
        name="Lost message",
        trigger_type=TriggerType.MANUAL,
        steps=[{"key": "shape", "action_type": "transform", "config": {"value": {"ok": True}}}],
    )
    # A run whose message was lost: recorded, never sent (no on_commit here), and older than the stall limit.
    run = Run.objects.create(
        workflow=workflow,
        workflow_version=workflow.version,
        version=services.workflow_current_version(workflow),
        trigger="manual",
        last_progress_at=timezone.now() - timedelta(minutes=5),
    )
    run.step_runs.create(position=0, key="shape", action_type="transform")
    offset = len(celery_worker.log_text())
    log = Path(tmp_path / "beat.log")
    env = subprocess_env({"LOG_FORMAT": "json", "POTAFLOW_RECOVERY_INTERVAL_SECONDS": "1"})
    # The Procfile's beat command (celery --quiet: no banner).
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "--quiet", "-A", "potaflow", "beat", "-l", "info",
         "--schedule", str(tmp_path / "beat-schedule")],
        cwd=BASE_DIR, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_run(run.pk, {"succeeded"}, timeout=60, worker=celery_worker)  # the sweeper sent it again
        time.sleep(3)  # a few more idle sweeps
    finally:
        beat.terminate()
        beat.wait(timeout=20)
    beat_lines = [line for line in log.read_text().splitlines() if line.strip()]
    worker_lines = [line for line in celery_worker.log_text()[offset:].splitlines() if line.strip()]
    for line in beat_lines + worker_lines:
        json.loads(line)  # every line is one JSON object
    assert any("beat: Starting" in line for line in beat_lines)
    # What the sweeper did is said once, by the sweeper; its periodic sends, receipts and successes are not.
    assert any(f"recovering stalled run {run.pk}" in line for line in worker_lines)
    assert not [line for line in beat_lines + worker_lines if "recover_stalled_runs" in line]
