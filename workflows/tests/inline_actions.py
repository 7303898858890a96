"""A test action that only computes (``runs_in_process``), loaded in the worker as a plugin.

The worker finds it through the ``potaflow.actions`` entry-point group (a ``.dist-info`` folder
on its ``PYTHONPATH``, written by ``plugin_path``); the test process registers it directly.
Each call appends a JSON line to ``config["log"]``; the first ``fail_times`` calls fail
retryably and the first call sleeps ``seconds`` (so a test can kill the worker in it).
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from integrations.base import Action, ActionContext
from integrations.errors import RetryableError

ENTRY_POINTS = "[potaflow.actions]\ntest.compute = workflows.tests.inline_actions:Compute\n"


class Compute(Action):
    name = "test.compute"
    title = "Compute (test)"
    has_side_effects = False
    runs_in_process = True

    def run(self, config: dict[str, Any], ctx: ActionContext) -> Any:
        path = Path(config["log"])
        previous = len(path.read_text().splitlines()) if path.exists() else 0
        with path.open("a") as fh:
            fh.write(json.dumps({"t": time.time(), "attempt": ctx.attempt, "pid": os.getpid()}) + "\n")
        if previous == 0 and config.get("seconds"):
            time.sleep(float(config["seconds"]))
        if previous < int(config.get("fail_times") or 0):
            raise RetryableError(f"compute: call {previous + 1} fails")
        return {"calls": previous + 1, "value": config.get("value")}


def plugin_path(folder: Path) -> Path:
    """A folder for ``PYTHONPATH`` whose distribution registers ``test.compute`` as a plugin action."""
    dist = folder / "potaflow_test_compute-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: potaflow-test-compute\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder
