"""Handlers for the operability tests (the worker loads them via POTAFLOW_HANDLER_MODULES)."""

import logging

from integrations.custom.handlers import handler

logger = logging.getLogger("workflows.tests.ops_handlers")


@handler("ops.log_url")
def log_url(data, ctx):
    """Logs a line holding a webhook URL and a secret query value, as careless code might."""
    logger.warning("calling %s for %s", data["url"], data.get("who", "nobody"))
    return {"logged": True}
