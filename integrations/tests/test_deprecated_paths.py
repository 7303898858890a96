"""Plugin authors' old import paths keep working for a release, warning (issue 17, defect 8).

A plugin written against ``integrations.actions.base`` and ``integrations.handlers``
(the paths before the one-folder-per-integration reshuffle) is installed as a real
distribution with a ``potaflow.actions`` entry point, and a fresh Django process
loads it as web or worker would: it starts, lists the action and runs the handler,
and says what to import instead.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

PLUGIN = """
from integrations.actions.base import Action, ActionContext
from integrations.handlers import handler


@handler("legacy.double")
def double(payload, ctx):
    return {"n": payload["n"] * 2}


class Legacy(Action):
    name = "legacy.echo"
    title = "Legacy echo"
    description = "A plugin written against the old import paths."

    def run(self, config, ctx: ActionContext):
        return {"config": config}
"""

PROBE = """
import json, django
django.setup()
from integrations import registry
from integrations.custom.handlers import get_handler
action = registry.get_action("legacy.echo")
print(json.dumps({"action": type(action).__name__, "doubled": get_handler("legacy.double")({"n": 21}, None)}))
"""


def test_a_plugin_on_the_old_import_paths_loads_and_is_told_the_new_ones(tmp_path):
    (tmp_path / "legacy_plugin.py").write_text(PLUGIN)
    info = tmp_path / "legacy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: legacy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[potaflow.actions]\nlegacy.echo = legacy_plugin:Legacy\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(BASE_DIR)]),
        "DJANGO_SETTINGS_MODULE": "potaflow.settings",
        "POTAFLOW_VAR_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, "-W", "default::DeprecationWarning", "-c", PROBE],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"action": "Legacy", "doubled": {"n": 42}}
    warnings = [line for line in result.stderr.splitlines() if "DeprecationWarning" in line]
    assert any("integrations.actions.base" in w and "import from integrations.base instead" in w for w in warnings)
    assert any(
        "integrations.handlers" in w and "import from integrations.custom.handlers instead" in w for w in warnings
    )
    # The warning points at the plugin's own import line, where the author fixes it.
    assert all("legacy_plugin.py" in w for w in warnings), warnings
