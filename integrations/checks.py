"""System checks for integration settings (run by ``manage.py check`` and at startup)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured

from .crypto import configured_keys
from .loading import broken
from .net import parse_allow_list


@register()
def check_fernet_keys(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """integrations.E001: without a usable key no credential can be stored or used."""
    try:
        configured_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Set POTAFLOW_FERNET_KEYS (comma-separated).", id="integrations.E001")]
    return []


@register()
def check_private_destinations(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """integrations.E002: a malformed allow-list entry would silently allow nothing (or too much)."""

    try:
        parse_allow_list(getattr(settings, "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS", []))
    except ValueError as exc:
        return [Error(str(exc), id="integrations.E002")]
    return []


CHECK_ID = "integrations.W003"


@register()
def check_loaded_code(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """integrations.W003: a plugin action or handler module that raised while loading is left out.

    A warning, not an error: the rest keeps working (``integrations.loading``), but a step naming
    what is missing fails until the module is fixed.
    """
    # Imported here: loading every handler module and plugin reads the app registry (ready by now).
    from .custom.handlers import discover
    from .registry import all_actions

    discover()
    all_actions()
    return [
        CheckWarning(f"{name} failed to load and is left out: {error}", hint="Fix or remove it.", id=CHECK_ID)
        for name, error in sorted(broken().items())
    ]
