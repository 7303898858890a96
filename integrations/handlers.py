"""Deprecated: ``integrations.handlers`` is now ``integrations.custom.handlers`` (kept for one release)."""

from integrations.custom.handlers import Handler, UnknownHandler, discover, get_handler, handler, handler_names
from integrations.deprecated import moved

__all__ = ["Handler", "UnknownHandler", "discover", "get_handler", "handler", "handler_names"]

moved("integrations.handlers", "integrations.custom.handlers")
