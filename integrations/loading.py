"""The one rule for loading code PotaFlow did not write: plugin actions and custom handler modules.

Each is loaded in isolation: one that raises while it is imported is logged
with its traceback, left out, and remembered, so the rest of PotaFlow (the
action list, every other handler, the web and the worker) keeps working, and
``manage.py check`` names it (``integrations.W003``, ``integrations.checks``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()
_broken: dict[str, str] = {}  # "<what> <name>" -> the error it raised


def load_isolated(what: str, name: str, load: Callable[[], T]) -> T | None:
    """``load()``, or ``None`` when it raises (logged and remembered for ``manage.py check``)."""
    key = f"{what} {name}"
    try:
        result = load()
    except Exception as exc:  # noqa: BLE001 - code we did not write may raise anything; it must not take the rest down
        logger.exception("%s failed to load; left out", key)
        with _lock:
            _broken[key] = f"{type(exc).__name__}: {exc}"
        return None
    with _lock:
        _broken.pop(key, None)
    return result


def broken() -> dict[str, str]:
    """What failed to load so far: ``"<what> <name>"`` -> its error."""
    with _lock:
        return dict(_broken)
