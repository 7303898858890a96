"""The action registry: action type name -> ``Action`` instance.

How to add an action type:

1. Built in: write ``integrations/actions/<name>.py`` with one ``Action``
   subclass (see ``integrations.actions.base.Action`` for the contract) and
   add its dotted path to ``BUILTIN_ACTIONS`` below.
2. From another package (a plugin): expose the class in the
   ``potaflow.actions`` entry-point group, e.g. in its pyproject.toml::

       [project.entry-points."potaflow.actions"]
       "acme.ping" = "acme_potaflow.actions:Ping"

   It is discovered on first use and listed by ``GET /api/actions/``.

User input only ever names a registered action type, never an import path.
"""

import logging
import threading
from importlib.metadata import entry_points

from django.utils.module_loading import import_string

from .actions.base import Action

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "potaflow.actions"

BUILTIN_ACTIONS: dict[str, str] = {
    "transform": "integrations.actions.transform.Transform",
    "filter": "integrations.actions.filter.Filter",
    "custom": "integrations.actions.custom.Custom",
    "http.request": "integrations.actions.http.HttpRequest",
    "slack.message": "integrations.actions.slack.SlackMessage",
    "email.send": "integrations.actions.email.SendEmail",
    "sheets.append_row": "integrations.actions.sheets.AppendRow",
}


class UnknownAction(LookupError):  # noqa: N818
    pass


_lock = threading.Lock()
_actions: dict[str, Action] | None = None


def _load() -> dict[str, Action]:
    actions: dict[str, Action] = {}
    for name, path in BUILTIN_ACTIONS.items():
        # Strict: a built-in that cannot be imported is a broken installation, not a warning.
        actions[name] = import_string(path)()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:
            logger.exception("plugin action %s (%s) failed to load", ep.name, ep.value)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Action)):
            logger.error("plugin action %s (%s) is not an Action subclass", ep.name, ep.value)
            continue
        name = cls.name or ep.name
        if name in actions:
            logger.error("plugin action %s (%s) clashes with an existing action", name, ep.value)
            continue
        actions[name] = cls()
    return actions


def all_actions() -> dict[str, Action]:
    global _actions
    if _actions is None:
        with _lock:
            if _actions is None:
                _actions = _load()
    return _actions


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
