"""The executable definitions of workflow versions, kept per process.

A ``WorkflowVersion`` never changes once written (``workflows.services`` writes
a new one for every change), so its definition, once read, is the one the
database holds for as long as the row exists. The webhook view
(``intake.webhook_target``) and the worker (``engine``) both read definitions
through this one cache: a webhook then costs one query for its workflow, and a
step none for its definition.

Bounded (``CACHE_SIZE`` versions, least recently used dropped first; a
definition larger than ``CACHE_MAX_BYTES`` as JSON is read each time instead,
so the cache stays under ~16 MiB) and thread-safe (gunicorn serves requests on
threads).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from ..models import WorkflowVersion

CACHE_SIZE = 256
CACHE_MAX_BYTES = 64 * 1024


class DefinitionCache:
    def __init__(self, size: int = CACHE_SIZE, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._definitions: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version_id: int) -> dict[str, Any]:
        """The version's definition, read from the database the first time."""
        with self._lock:
            definition = self._definitions.get(version_id)
            if definition is not None:
                self._definitions.move_to_end(version_id)
                return definition
        definition = WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id)
        return self.remember(version_id, definition)

    def remember(self, version_id: int, definition: dict[str, Any]) -> dict[str, Any]:
        """Keep a definition read elsewhere (e.g. with the engine's claim); returns it."""
        if len(json.dumps(definition)) <= self.max_bytes:
            with self._lock:
                self._definitions[version_id] = definition
                self._definitions.move_to_end(version_id)
                while len(self._definitions) > self.size:
                    self._definitions.popitem(last=False)
        return definition

    def known(self) -> list[int]:
        """The versions held now (the engine's claim skips reading their definitions)."""
        with self._lock:
            return list(self._definitions)

    def clear(self) -> None:
        with self._lock:
            self._definitions.clear()


definitions = DefinitionCache()
