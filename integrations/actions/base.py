"""The action contract. Every action type is one subclass of ``Action``."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jsonschema

from integrations.errors import ConfigError


@dataclass(frozen=True)
class ActionContext:
    """What an action may know about the step it runs in (read-only).

    ``credential`` holds the decrypted secret fields of the step's credential
    (or None); ``credential_kind`` its kind. ``template_context`` is what the
    config was rendered with (trigger, steps, run, workflow).
    ``idempotency_key`` is the same for every attempt of this step in this run
    (retries, redelivery, recovery) and new for a replay or another run: an
    action passes it to a destination that can drop repeats.
    """

    run_id: str
    workflow_id: int
    organization_id: int
    step_key: str
    attempt: int = 1
    idempotency_key: str = ""
    timeout_seconds: float = 30.0
    credential: Mapping[str, Any] | None = None
    credential_kind: str | None = None
    template_context: Mapping[str, Any] = field(default_factory=dict)


class Action:
    """Base class for action types.

    Subclasses set:
    - ``name``: the registry name users put in ``Step.action_type`` (``"slack.message"``).
    - ``title`` and ``description``: shown in the admin and ``GET /api/actions/``.
    - ``config_schema``: a JSON Schema (draft 2020-12) for the step's config,
      checked when a step is saved. Template strings are allowed wherever the
      schema says ``string``; a value that is a single ``{{ expression }}``
      is accepted for any type because its type is known only at run time.
    - ``credential_kind``: the ``Credential.kind`` a step must use (a string),
      several accepted kinds (a tuple), or None for no credential.
    - ``credential_required``: whether a step must have a credential.
    - ``has_side_effects``: False for actions that only compute (transform,
      filter): a worker dying in them leaves nothing in doubt.

    ``repeat_is_safe(config)`` says whether running the step again after an
    attempt of unknown outcome (its worker died mid-call) cannot duplicate an
    effect, e.g. because the destination drops repeats of the idempotency key.
    It decides the default of a step's ``on_in_doubt`` policy.

    and implement ``run(config, ctx) -> dict`` which receives the *rendered*
    config and returns a JSON-serialisable dict (the step's output). It raises
    ``RetryableError`` for transient failures and ``PermanentError`` for the
    rest (see ``integrations.errors``); anything else it raises is recorded as
    a permanent failure with the exception's type and message.

    ``validate_config(config)`` may be extended for checks a schema cannot
    express (e.g. that a named handler exists); it raises ``ConfigError``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    credential_kind: ClassVar[str | tuple[str, ...] | None] = None
    credential_required: ClassVar[bool] = False
    has_side_effects: ClassVar[bool] = True

    def run(self, config: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        raise NotImplementedError("Action subclasses must implement run(config, ctx)")

    @classmethod
    def accepted_credential_kinds(cls) -> tuple[str, ...]:
        if cls.credential_kind is None:
            return ()
        if isinstance(cls.credential_kind, str):
            return (cls.credential_kind,)
        return tuple(cls.credential_kind)

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        return not self.has_side_effects

    def request_summary(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """What an attempt sends, for its record: where to, never secrets or whole bodies."""
        return None

    def validate_config(self, config: Any) -> None:
        """Check ``config`` (unrendered, may hold templates) against the schema."""
        validator = jsonschema.Draft202012Validator(self.config_schema)
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
            if _is_single_expression(error.instance) and error.validator in ("type", "enum", "format"):
                continue  # a {{ expression }} gets its real type at run time
            path = ".".join(str(p) for p in error.absolute_path)
            where = f"config.{path}" if path else "config"
            raise ConfigError(f"{where}: {error.message}", field=where)

    def validate_credential_use(self, config: Any, credential_public: Mapping[str, Any]) -> None:
        """Check, when a step is saved, that its (unrendered) config may use a credential with
        these public fields (e.g. its ``allowed_hosts``); raises ``ConfigError``. Default: no rule."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title or self.name,
            "description": self.description,
            "config_schema": self.config_schema,
            "credential_kind": self.credential_kind
            if not isinstance(self.credential_kind, tuple)
            else list(self.credential_kind),
            "credential_required": self.credential_required,
            "repeat_is_safe_by_default": self.repeat_is_safe({}),
        }


def _is_single_expression(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    stripped = value.strip()
    return stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1
