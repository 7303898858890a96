"""The JSON Schema (draft 2020-12) of a workflow definition, built from the action registry.

Published at ``GET /api/schema/workflow-definition.json`` for editors, the builder
and outside tools: ``steps`` and ``on_failure`` are step lists; a step's ``config``
is its action's ``config_schema``, in which the nested step lists of control steps
(``branch``'s ``paths[i].steps`` and ``otherwise``, ``for_each``'s ``steps``) refer
back to the step list: the schema is recursive, as the definition is.

What a schema cannot say (keys unique in the whole tree, the depth limit, which steps a
template may read, that a ``{{ expression }}`` stands for any type) is checked by
``workflows.validation``, which names the exact place of each problem.
"""

import copy
from typing import Any

from django.conf import settings

from integrations.registry import all_actions

from ..models import STEP_DEFAULTS, InDoubtPolicy

STEPS_REF = {"$ref": "#/$defs/steps"}


def _is_step_list(schema: Any) -> bool:
    """A control step's nested list as its config schema declares it (``integrations.control.STEP_LIST``)."""
    items = schema.get("items") if isinstance(schema, dict) else None
    return (
        isinstance(schema, dict)
        and schema.get("type") == "array"
        and isinstance(items, dict)
        and items.get("type") == "object"
        and "A step" in str(items.get("description", ""))
    )


def _with_step_refs(schema: Any) -> Any:
    """The config schema with every nested step list replaced by a reference to the step list."""
    if _is_step_list(schema):
        return {**STEPS_REF, "description": schema.get("description", "")}
    if isinstance(schema, dict):
        return {k: _with_step_refs(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_with_step_refs(v) for v in schema]
    return schema


def _step_schema(action_names: list[str]) -> dict[str, Any]:
    number = {"type": "number"}
    return {
        "type": "object",
        "properties": {
            "key": {
                "type": "string",
                "pattern": r"^[a-z][a-z0-9_]{0,63}$",
                "description": "Unique in the whole workflow; templates read steps.<key>.output.",
            },
            "action_type": {"enum": action_names},
            "config": {"type": "object"},
            "credential": {"type": ["integer", "null"], "description": "A credential id of the organization."},
            "max_retries": {"type": "integer", "minimum": 0, "default": STEP_DEFAULTS["max_retries"]},
            "backoff_seconds": {**number, "minimum": 0, "default": STEP_DEFAULTS["backoff_seconds"]},
            "backoff_max_seconds": {**number, "minimum": 0, "default": STEP_DEFAULTS["backoff_max_seconds"]},
            "timeout_seconds": {**number, "exclusiveMinimum": 0, "default": STEP_DEFAULTS["timeout_seconds"]},
            "on_in_doubt": {"enum": ["", *InDoubtPolicy.values], "default": ""},
            "continue_on_error": {"type": "boolean", "default": False},
            "credential_id": {
                "type": ["integer", "null"],
                "description": "As a version's definition stores it (the same as credential).",
            },
            "position": {"type": "integer", "description": "Top-level steps, as read back: ignored when saved."},
        },
        "required": ["key", "action_type"],
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"action_type": {"const": name}}, "required": ["action_type"]},
                "then": {"properties": {"config": {"$ref": f"#/$defs/config/{name}"}}},
            }
            for name in action_names
        ],
    }


def unknown_step_fields(spec: Any) -> list[str]:
    """Fields of a step spec the definition's schema does not know (a misspelt ``contine_on_error``
    in a nested step would otherwise be dropped without a word). The config is checked by its action."""
    if not isinstance(spec, dict):
        return []
    return sorted(set(spec) - set(_step_schema([])["properties"]))


def definition_schema() -> dict[str, Any]:
    """The schema of ``{"steps": [...], "on_failure": [...]}`` for the installed actions."""
    actions = all_actions()
    names = sorted(actions)
    configs = {name: _with_step_refs(copy.deepcopy(actions[name].config_schema)) for name in names}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": settings.POTAFLOW_BASE_URL.rstrip("/") + "/api/schema/workflow-definition.json",
        "title": "PotaFlow workflow definition",
        "description": (
            "steps run in order; branch and for_each steps hold nested step lists of the same shape; "
            f"on_failure runs once when a run fails. At most {settings.POTAFLOW_FLOW_MAX_STEPS} steps in all "
            f"(POTAFLOW_FLOW_MAX_STEPS), nested at most {settings.POTAFLOW_FLOW_MAX_DEPTH} deep "
            "(POTAFLOW_FLOW_MAX_DEPTH). A string that is a single {{ expression }} stands for a value of any type."
        ),
        "type": "object",
        "properties": {"steps": STEPS_REF, "on_failure": STEPS_REF},
        "required": ["steps"],
        "$defs": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
            "step": _step_schema(names),
            "config": configs,
        },
    }
