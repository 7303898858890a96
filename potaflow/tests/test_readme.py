"""The README says what a newcomer can run as it is written (issue 17, defect 7)."""

import re
from collections import Counter
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_manage_py_command_runs_with_the_projects_venv():
    # `make run` installs into .venv: a bare `python manage.py` is the system's Python, without Django.
    bare = [line for line in README.splitlines() if re.search(r"(?<![/\w])python3? manage\.py", line)]
    assert bare == []


def test_the_configuration_table_lists_each_variable_once():
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", README, flags=re.MULTILINE)
    assert len(rows) > 20
    assert [name for name, count in Counter(rows).items() if count > 1] == []
