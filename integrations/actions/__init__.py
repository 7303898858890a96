"""Deprecated package: the action contract moved to ``integrations.base`` (see ``integrations.actions.base``)."""
