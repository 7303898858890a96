"""The Procfile's commands, as honcho runs them: tests start the product's processes as users do."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def procfile_command(name: str) -> list[str]:
    """The Procfile's command for ``name`` (``exec`` dropped; the program run by this interpreter's ``-m``)."""
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            words = shlex.split(line.split(":", 1)[1])
            words = words[1:] if words[0] == "exec" else words
            return [sys.executable, "-m", words[0], *words[1:]]
    raise AssertionError(f"no {name} process in the Procfile")
