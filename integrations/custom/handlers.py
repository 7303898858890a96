"""Handlers for the ``custom`` action: Python functions registered in code by name.

Write them in any installed app's ``handlers.py`` (discovered automatically)
or in a module listed in ``settings.POTAFLOW_HANDLER_MODULES``
(env ``POTAFLOW_HANDLER_MODULES=myproject.hooks,other.module``)::

    from integrations.custom.handlers import handler
    from integrations.errors import RetryableError

    @handler("crm.lookup")
    def lookup(data, ctx):
        '''``data`` is the step's rendered ``input``; ``ctx`` an ActionContext.'''
        return {"customer_id": 42}   # any JSON value becomes the step's output

A step then uses ``{"action_type": "custom", "config": {"handler": "crm.lookup",
"input": {"email": "{{ trigger.body.email }}"}}}``. A handler raises
``RetryableError``/``PermanentError`` like any action. Users only ever name a
registered handler, never an import path.
"""

import functools
import threading
from collections.abc import Callable
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.utils.module_loading import module_has_submodule

from integrations.loading import load_isolated

Handler = Callable[[Any, Any], Any]

_registry: dict[str, Handler] = {}
_lock = threading.Lock()
_discovered = False


class UnknownHandler(LookupError):  # noqa: N818
    pass


def handler(name: str, *, repeat_safe: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler called ``name``.

    ``repeat_safe=True`` declares that calling it again after an attempt of
    unknown outcome cannot duplicate an effect (it is idempotent, e.g. keyed
    on ``ctx.idempotency_key``): such steps are retried, not dead-lettered.
    """

    def register(func: Handler) -> Handler:
        func.potaflow_repeat_safe = repeat_safe  # type: ignore[attr-defined]
        existing = _registry.get(name)
        if existing is not None and _qualified(existing) != _qualified(func):
            raise ValueError(f"handler {name!r} is already registered by {_qualified(existing)}")
        _registry[name] = func
        return func

    return register


def _qualified(func: Handler) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', func)}"


def handler_modules() -> list[str]:
    """Every installed app's ``handlers`` module, then the ``POTAFLOW_HANDLER_MODULES``."""
    found = [
        f"{app.name}.handlers"
        for app in apps.get_app_configs()
        # integrations.handlers is the deprecated path of this module (integrations.deprecated), not handlers.
        if module_has_submodule(app.module, "handlers") and app.name != "integrations"
    ]
    return found + [m for m in getattr(settings, "POTAFLOW_HANDLER_MODULES", []) if m not in found]


def discover() -> None:
    """Import every handler module once; one that raises is left out (``integrations.loading``), not fatal."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        for module in handler_modules():
            load_isolated("handler module", module, functools.partial(import_module, module))
        _discovered = True


def get_handler(name: str) -> Handler:
    discover()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownHandler(f"no handler named {name!r} is registered") from None


def handler_names() -> list[str]:
    discover()
    return sorted(_registry)
