"""Old import paths of the plugin API, kept working for one release (README "Changelog").

A plugin written against a path that moved keeps loading; importing the old
path warns with a ``DeprecationWarning`` that names the new one. Each shim is a
module of its own at the old path that calls ``moved`` and re-exports the new
module's names.
"""

from __future__ import annotations

import warnings

# The release after which the old paths are removed.
REMOVED_IN = "0.3"


def moved(old: str, new: str) -> None:
    """Warn, at the importer's line, that ``old`` is now ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in PotaFlow {REMOVED_IN}: import from {new} instead",
        DeprecationWarning,
        stacklevel=3,
    )
