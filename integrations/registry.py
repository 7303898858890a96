"""The registry: every integration's actions (type name -> ``Action``) and credential kinds.

An integration is one folder, ``integrations/<name>/``, holding everything about it:

- ``action.py``: one ``Action`` subclass per action type (the contract is the
  docstring of ``integrations.base.Action``);
- ``credentials.py``: its credential kinds, as ``integrations.base.KindSpec``
  values (stored value, label, fields, checks, how it authenticates a request);
- ``__init__.py``: exposes ``ACTIONS`` (the classes) and ``CREDENTIAL_KINDS``
  (the specs, ``()`` for none);
- ``tests/``: its tests, and ``tests/peer.py``, a local server speaking the
  service's protocol for them (``testing.network`` turns it into a fixture).

How to add an integration (e.g. ``acme``):

1. Write ``integrations/acme/`` as above. Import a client library inside
   ``run`` (with a comment "deferred: keeps idle memory down"), not at module
   level, so processes that never use it do not load it. Classify a service's
   answer with ``integrations.errors`` (``from_status``, ``parse_retry_after``)
   and pass what it echoes through ``integrations.storable``.
2. Add ``"integrations.acme"`` to ``INTEGRATIONS`` below.

That is all: ``GET /api/actions/``, the admin, the credential forms and the
``Credential.kind`` choices read this registry (the choices are a callable,
so a new kind needs no migration). A kind's stored value (``"smtp"``) is in
the database: never rename it.

From another package (a plugin), expose an ``Action`` subclass in the
``potaflow.actions`` entry-point group, e.g. in its pyproject.toml::

    [project.entry-points."potaflow.actions"]
    "acme.ping" = "acme_potaflow.actions:Ping"

It is discovered on first use and listed by ``GET /api/actions/``.

User input only ever names a registered action type, never an import path.
"""

import logging
import threading
from importlib import import_module
from importlib.metadata import entry_points

from .base import Action, KindSpec
from .loading import load_isolated

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "potaflow.actions"

# The integration packages, in the order the action list and the credential kinds are shown.
INTEGRATIONS: tuple[str, ...] = (
    "integrations.builtin",
    "integrations.control",
    "integrations.custom",
    "integrations.http",
    "integrations.slack",
    "integrations.email",
    "integrations.sheets",
    "integrations.files",
    "integrations.oauth",
)


class UnknownAction(LookupError):  # noqa: N818
    pass


_lock = threading.Lock()
_actions: dict[str, Action] | None = None
_kinds: dict[str, KindSpec] | None = None


def _load_integrations() -> tuple[dict[str, Action], dict[str, KindSpec]]:
    actions: dict[str, Action] = {}
    kinds: dict[str, KindSpec] = {}
    for path in INTEGRATIONS:
        # Strict: a built-in integration that cannot be imported is a broken installation, not a warning.
        package = import_module(path)
        for cls in package.ACTIONS:
            actions[cls.name] = cls()
        for spec in package.CREDENTIAL_KINDS:
            kinds[spec.kind] = spec
    return actions, kinds


def _load_plugins(actions: dict[str, Action]) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = load_isolated("plugin action", f"{ep.name} ({ep.value})", ep.load)
        if cls is None:
            continue
        if not (isinstance(cls, type) and issubclass(cls, Action)):
            logger.error("plugin action %s (%s) is not an Action subclass", ep.name, ep.value)
            continue
        name = cls.name or ep.name
        if name in actions:
            logger.error("plugin action %s (%s) clashes with an existing action", name, ep.value)
            continue
        actions[name] = cls()


def all_actions() -> dict[str, Action]:
    global _actions
    if _actions is None:
        with _lock:
            if _actions is None:
                actions, _ = _load_integrations()
                _load_plugins(actions)
                _actions = actions
    return _actions


def credential_kinds() -> dict[str, KindSpec]:
    """Every credential kind of the built-in integrations, by stored value."""
    global _kinds
    if _kinds is None:
        with _lock:
            if _kinds is None:
                _kinds = _load_integrations()[1]
    return _kinds


def credential_kind_choices() -> list[tuple[str, str]]:
    """``Credential.kind``'s choices (a callable, so that a new kind needs no migration)."""
    return [(spec.kind, spec.label) for spec in credential_kinds().values()]


def get_action(name: str) -> Action:
    try:
        return all_actions()[name]
    except KeyError:
        raise UnknownAction(f"unknown action type {name!r}") from None


def reset() -> None:
    """Forget what was loaded (tests that install a plugin call this)."""
    global _actions
    with _lock:
        _actions = None
