"""Code PotaFlow did not write loads in isolation, by one rule (issue 17, defect 5).

A custom-handler module that raises at import used to take ``GET /api/actions/``
down (500) while a broken plugin was already left out and logged; both now go
through ``integrations.loading`` and ``manage.py check`` names them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.custom import handlers

BASE_DIR = Path(__file__).resolve().parents[2]
GOOD = "from integrations.custom.handlers import handler\n\n\n@handler('good.one')\ndef one(data, ctx):\n    return 1\n"
BROKEN = "import no_such_dependency_of_this_plugin  # noqa: F401\n"


@pytest.fixture
def handler_modules(tmp_path, monkeypatch, settings):
    (tmp_path / "good_hooks.py").write_text(GOOD)
    (tmp_path / "broken_hooks.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.POTAFLOW_HANDLER_MODULES = ["broken_hooks", "good_hooks"]
    monkeypatch.setattr(handlers, "_discovered", False)
    return tmp_path


def test_a_broken_handler_module_leaves_the_action_list_and_the_other_handlers_working(world, handler_modules):
    response = world.client("viewer").get("/api/actions/")
    assert response.status_code == 200, response.content[:300]
    assert "custom" in {a["name"] for a in response.json()["actions"]}
    assert "good.one" in handlers.handler_names()


def test_manage_py_check_names_the_broken_handler_module(handler_modules):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(handler_modules), str(BASE_DIR)]),
        "POTAFLOW_HANDLER_MODULES": "broken_hooks,good_hooks",
        "POTAFLOW_VAR_DIR": str(handler_modules / "var"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]  # a warning: web and worker still start
    assert "integrations.W003" in result.stderr
    assert "handler module broken_hooks failed to load" in result.stderr
    assert "no_such_dependency_of_this_plugin" in result.stderr
    assert "good_hooks" not in result.stderr.split("integrations.W003", 1)[1].split("\n")[0]
