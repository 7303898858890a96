"""``transform``: build a value (usually an object) from templates."""

from typing import Any

from integrations.base import Action, ActionContext
from integrations.storable import JSONValue


class Transform(Action):
    name = "transform"
    has_side_effects = False
    runs_in_process = True
    computes_ahead = True
    title = "Transform"
    description = (
        "Builds a JSON value from templates; the rendered value is the step's output, "
        'e.g. {"value": {"email": "{{ trigger.body.email }}", "total": "{{ trigger.body.n * 2 }}"}}.'
    )
    config_schema = {
        "type": "object",
        "properties": {"value": {"description": "Any JSON value; strings are templates."}},
        "required": ["value"],
        "additionalProperties": False,
    }

    def run(self, config: dict[str, Any], ctx: ActionContext) -> JSONValue:
        value: JSONValue = config["value"]  # the rendered config is JSON
        return value
