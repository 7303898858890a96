"""``custom``: call a Python handler registered in code (see ``integrations.custom.handlers``)."""

from collections.abc import Mapping
from typing import Any

from integrations.base import Action, ActionContext
from integrations.errors import ConfigError, PermanentError
from integrations.storable import JSONValue

from .handlers import UnknownHandler, get_handler, handler_names


class Custom(Action):
    name = "custom"
    title = "Custom handler"
    description = (
        "Calls a handler registered in code with @handler(name); its return value is the output. "
        '"input" (any JSON, templated) is passed to it.'
    )
    config_schema = {
        "type": "object",
        "properties": {
            "handler": {"type": "string", "minLength": 1},
            "input": {"description": "Any JSON value; strings are templates."},
        },
        "required": ["handler"],
        "additionalProperties": False,
    }

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        try:
            get_handler(config["handler"])
        except UnknownHandler:
            known = ", ".join(handler_names()) or "none"
            raise ConfigError(
                f"config.handler: no handler named {config['handler']!r} is registered (registered: {known})",
                field="config.handler",
            ) from None

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        try:
            return bool(getattr(get_handler(config.get("handler", "")), "potaflow_repeat_safe", False))
        except UnknownHandler:
            return False

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue]:
        return {"handler": config.get("handler")}

    def run(self, config: dict[str, Any], ctx: ActionContext) -> Any:
        # Any: whatever the handler returns; the engine fails the step when it is not storable JSON.
        try:
            func = get_handler(config["handler"])
        except UnknownHandler as exc:
            raise PermanentError(str(exc)) from None
        return func(config.get("input"), ctx)
