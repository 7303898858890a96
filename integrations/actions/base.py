"""Deprecated: ``integrations.actions.base`` is now ``integrations.base`` (kept for one release)."""

from integrations.base import Action, ActionContext, Field, KindSpec, TokenSource, is_single_expression
from integrations.deprecated import moved

__all__ = ["Action", "ActionContext", "Field", "KindSpec", "TokenSource", "is_single_expression"]

moved("integrations.actions.base", "integrations.base")
