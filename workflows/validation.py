"""Checking a workflow definition before anything is written.

``validate_definition`` checks the whole definition (trigger, schedule, steps,
action configs, templates, credentials, retry policy) and raises
``WorkflowInvalid`` whose ``errors`` maps a field path (``"schedule"``,
``"steps[1].config.url"``) to messages; the API turns it into a 400 with the
same field names. It returns the ``Step`` rows to write.
"""

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from django.conf import settings

from integrations import storable
from integrations.errors import ConfigError
from integrations.models import Credential
from integrations.registry import UnknownAction, all_actions, get_action

from . import templating
from .flow import schema, tree
from .intake import signatures
from .models import STEP_DEFAULTS, InDoubtPolicy, Step, TriggerType, Workflow
from .scheduling import schedules

STEP_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Retry policy bounds. backoff_max_seconds stays below the Redis visibility
# timeout (1 h by default), or a delayed retry could be delivered twice.
LIMITS = {
    "max_retries": (0, 25),
    "backoff_seconds": (0.0, 3600.0),
    "backoff_max_seconds": (0.0, 3600.0),
    "timeout_seconds": (0.1, 900.0),  # the upper bound is POTAFLOW_STEP_TIMEOUT_MAX_SECONDS (limits())
}


def limits() -> dict[str, tuple[float, float]]:
    """The bounds of each step policy field, with the operator's maximum step timeout."""
    return {**LIMITS, "timeout_seconds": (0.1, float(settings.POTAFLOW_STEP_TIMEOUT_MAX_SECONDS))}


WORKFLOW_FIELDS = (
    *("name", "description", "is_active", "trigger_type", "webhook_secret", "schedule", "timezone"),
    "webhook_body_as_file",
    "on_failure",
    *signatures.SIGNING_FIELDS,
    *("notify_on_failure", "notify_slack_channel", "notify_slack_credential_id"),
)
# Settings of a workflow that are not part of what its runs execute: changing them makes no new version.
UNVERSIONED_FIELDS = frozenset({"is_active", "notify_on_failure", "notify_slack_channel", "notify_slack_credential_id"})


class WorkflowInvalid(Exception):  # noqa: N818 - reads as a state
    """``errors``: field path -> list of messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        field, messages = next(iter(errors.items()))
        super().__init__(f"{field}: {messages[0]}")


class ReplayNotAllowed(WorkflowInvalid):
    pass


class PayloadInvalid(WorkflowInvalid):
    """A run's payload holds a value the database cannot store (``errors["payload"]`` says where)."""

    @property
    def message(self) -> str:
        return self.errors["payload"][0]


def validate_definition(workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> list[Step]:
    """Check the whole definition; raise WorkflowInvalid naming every bad field.

    All its templates are checked within one CPU budget (``templating.check_budget``).
    """
    with templating.check_budget():
        return _validate_definition(workflow, steps)


def _validate_definition(workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> list[Step]:
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not (workflow.name or "").strip():
        add("name", "A workflow needs a name.")
    if workflow.trigger_type not in TriggerType.values:
        add("trigger_type", f"{workflow.trigger_type!r} is not one of {', '.join(TriggerType.values)}.")
    if workflow.trigger_type == TriggerType.SCHEDULE:
        if not workflow.schedule.strip():
            add("schedule", 'A schedule workflow needs a 5-field cron expression, e.g. "*/5 * * * *".')
        else:
            try:
                schedules.parse_cron(workflow.schedule)
            except schedules.ScheduleError as exc:
                add(exc.field, exc.message)
    elif workflow.schedule.strip():
        try:
            schedules.parse_cron(workflow.schedule)
        except schedules.ScheduleError as exc:
            add(exc.field, exc.message)
    try:
        schedules.check_timezone(workflow.timezone or "")
    except schedules.ScheduleError as exc:
        add(exc.field, exc.message)
    _check_notices(workflow, add)
    for field in WORKFLOW_FIELDS:
        value = getattr(workflow, field)
        if isinstance(value, str) and storable.NUL in value:
            add(field, f"{field} contains a NUL character (\\u0000), which cannot be stored.")
    for field, message in signatures.validate({f: getattr(workflow, f) for f in WORKFLOW_FIELDS}).items():
        add(field, message)
    rows = _validate_tree(workflow, steps, add)
    if errors:
        raise WorkflowInvalid(errors)
    return rows


def max_steps() -> int:
    """Steps of a definition, nested ones and the error path included (``POTAFLOW_FLOW_MAX_STEPS``)."""
    return int(settings.POTAFLOW_FLOW_MAX_STEPS)


def max_depth() -> int:
    """How deeply step lists nest (``POTAFLOW_FLOW_MAX_DEPTH``; a top-level step is at depth 1)."""
    return int(settings.POTAFLOW_FLOW_MAX_DEPTH)


def _copy_spec(spec: Any) -> Any:
    """A step spec whose config may be normalized in place without touching the caller's."""
    if not isinstance(spec, Mapping):
        return spec
    return {**spec, "config": copy.deepcopy(spec.get("config"))}


def _validate_tree(workflow: Workflow, steps: Sequence[Any], add: Any) -> list[Step]:
    """Check every step of the tree (``steps``, their nested lists, ``workflow.on_failure``).

    Returns the top-level ``Step`` rows; the nested specs inside their configs and
    ``workflow.on_failure`` are left normalized (every field present, credentials as ids),
    the shape the engine reads from a version's definition.
    """
    on_failure: Any = workflow.on_failure if workflow.on_failure is not None else []
    if not isinstance(on_failure, list):
        add("on_failure", "on_failure must be a list of steps (the error path), e.g. [].")
        on_failure = []
    if not isinstance(steps, Sequence) or isinstance(steps, str | bytes):
        add("steps", "steps must be a list of steps.")
        steps = []
    definition = {"steps": [_copy_spec(s) for s in steps], "on_failure": [_copy_spec(s) for s in on_failure]}
    for name in ("steps", "on_failure"):
        for index, spec in enumerate(definition[name]):
            if not isinstance(spec, Mapping):
                add(f"{name}[{index}]", "A step must be an object.")
    located_steps = list(tree.walk_definition(definition))
    all_keys = {located.key for located in located_steps if located.key}
    visible = tree.visible_in_definition(definition)
    limit, deepest = max_steps(), max_depth()
    if len(located_steps) > limit:
        add(
            "steps",
            f"A workflow has at most {limit} steps, nested steps and the error path included "
            f"(POTAFLOW_FLOW_MAX_STEPS); got {len(located_steps)}.",
        )
    rows: list[Step] = []
    seen: dict[str, str] = {}
    # Walked again (not the list above): a step whose config is refused is emptied, and its
    # nested steps are then not checked one by one.
    for located in tree.walk_definition(definition):
        if located.depth == deepest + 1:
            add(
                located.where,
                f"step {located.key or located.where!r} is nested {located.depth} deep; at most {deepest} levels "
                "of steps inside branches and loops (POTAFLOW_FLOW_MAX_DEPTH).",
            )
        row = _validate_step(workflow, located, seen, visible, all_keys, add)
        if located.depth == 1 and not located.on_failure:
            rows.append(row)
    workflow.on_failure = definition["on_failure"]
    return rows


def _validate_step(
    workflow: Workflow,
    located: tree.Located,
    seen: dict[str, str],
    visible: Mapping[str, frozenset[str]],
    all_keys: set[str],
    add: Any,
) -> Step:
    """Check one step of the tree; normalizes its spec in place (nested and error-path steps)."""
    where = located.where
    spec = cast("dict[str, Any]", located.spec)
    key = spec.get("key") or ""
    label = f"step {key!r}" if key else f"step at {where}"
    if not isinstance(key, str) or not STEP_KEY_RE.match(key):
        add(
            f"{where}.key",
            f"{label}: a key is required: lowercase letters, digits and underscores, starting with a letter.",
        )
    elif key in seen:
        add(
            f"{where}.key",
            f"{label}: the key {key!r} is used by an earlier step ({seen[key]}); keys must be unique in the whole "
            "workflow (nested steps and the error path included).",
        )
    else:
        seen[key] = where
    for name in schema.unknown_step_fields(spec):
        if name != "credential" and not (located.depth == 1 and not located.on_failure):
            add(f"{where}.{name}", f"{label}: unknown step field {name!r} (see /api/schema/workflow-definition.json).")
    action_type = spec.get("action_type") or ""
    config = spec.get("config", {})
    if config is None:
        config = {}
    action = None
    try:
        action = get_action(action_type)
    except UnknownAction:
        known = ", ".join(sorted(all_actions()))
        add(f"{where}.action_type", f"{label}: unknown action type {action_type!r} (known: {known}).")
    if not isinstance(config, dict):
        add(f"{where}.config", f"{label}: config must be an object.")
        config = {}
    if located.depth == 1:  # nested configs are inside their container's, checked with it
        unstorable = storable.problem(config, "config")
        if unstorable is not None:
            path, reason = unstorable
            add(f"{where}.{path}", f"{label}: {path} {reason}.")
            config = {}
    if action is not None:
        try:
            action.validate_config(templating.prepare_config(action, config, whole=True))
        except ConfigError as exc:
            add(f"{where}.{exc.field}", f"{label}: {exc.message}")
            if action.control:
                config = {}  # its nested lists are not walked: their errors would be guesses
        names = (*(("item", "index") if located.in_loop else ()), *(("failure",) if located.on_failure else ()))
        earlier = sorted(visible.get(key, frozenset())) if isinstance(key, str) else []
        for path, text in templating.iter_strings(templating.prepare_config(action, config)):
            try:
                templating.check_template(text, earlier_steps=earlier, names=names, other_steps=all_keys)
            except templating.TemplateError as exc:
                add(f"{where}.{path}", f"{label} {path}: {exc.message}")
    spec["config"] = config

    credential = _resolve_credential(workflow, spec.get("credential"), action, label, f"{where}.credential", add)
    if action is not None and credential is not None and credential.kind in action.accepted_credential_kinds():
        try:
            action.validate_credential_use(templating.prepare_config(action, config), credential.public_data)
        except ConfigError as exc:
            add(f"{where}.{exc.field}", f"{label}: {exc.message}")

    policy: dict[str, Any] = {}
    bounds = limits()
    for field, default in STEP_DEFAULTS.items():
        value = spec.get(field)
        if value is None:
            value = default
        low, high = bounds[field]
        try:
            number = int(value) if field == "max_retries" else float(value)
        except (TypeError, ValueError):
            add(f"{where}.{field}", f"{label}: {field} must be a number.")
            continue
        if isinstance(value, bool) or not (low <= number <= high):
            add(f"{where}.{field}", f"{label}: {field} must be between {low} and {high}.")
        policy[field] = number
    if policy.get("backoff_max_seconds", 0) < policy.get("backoff_seconds", 0):
        add(f"{where}.backoff_max_seconds", f"{label}: backoff_max_seconds must be >= backoff_seconds.")
    on_in_doubt = spec.get("on_in_doubt") or ""
    if on_in_doubt not in ("", *InDoubtPolicy.values):
        add(f"{where}.on_in_doubt", f"{label}: on_in_doubt must be one of {', '.join(InDoubtPolicy.values)} or empty.")
        on_in_doubt = ""
    continue_on_error = spec.get("continue_on_error", False)
    if continue_on_error is None:
        continue_on_error = False
    if not isinstance(continue_on_error, bool):
        add(f"{where}.continue_on_error", f"{label}: continue_on_error must be true or false.")
        continue_on_error = False
    if located.depth > 1 or located.on_failure:
        # The shape the engine reads from a version's definition (the same fields as a top-level step).
        spec.clear()
        spec.update(
            key=key,
            action_type=action_type,
            config=config,
            credential=credential.pk if credential is not None else None,
            **{field: policy.get(field, STEP_DEFAULTS[field]) for field in STEP_DEFAULTS},
            on_in_doubt=on_in_doubt,
            continue_on_error=continue_on_error,
        )
    return Step(
        key=key,
        action_type=action_type,
        config=config,
        credential=credential,
        on_in_doubt=on_in_doubt,
        continue_on_error=continue_on_error,
        **policy,
    )


def _resolve_credential(workflow: Workflow, value: Any, action, label: str, field: str, add) -> Credential | None:
    if value in (None, ""):
        if action is not None and action.credential_required:
            add(field, f"{label}: the {action.name} action needs a credential of kind {action.credential_kind}.")
        return None
    credential_id = value.pk if isinstance(value, Credential) else value
    credential = Credential.objects.filter(organization_id=workflow.organization_id, pk=credential_id).first()
    if credential is None:
        add(field, f"{label}: no credential {credential_id!r} in this organization.")
        return None
    if action is not None:
        accepted = action.accepted_credential_kinds()
        if credential.kind not in accepted:
            wanted = ", ".join(accepted) if accepted else "no credential"
            add(field, f"{label}: a {credential.kind} credential cannot be used by {action.name} (accepts: {wanted}).")
    return credential


def _check_notices(workflow: Workflow, add: Any) -> None:
    """Slack failure notices need a Slack credential (or connection) of the workflow's organization, and a channel."""
    credential_id = workflow.notify_slack_credential_id
    if credential_id is None:
        if workflow.notify_slack_channel.strip():
            add("notify_slack_credential", "Choose the Slack credential that posts the failure notices.")
        return
    kind = (
        Credential.objects.filter(pk=credential_id, organization_id=workflow.organization_id)
        .values_list("kind", flat=True)
        .first()
    )
    if kind is None:
        add("notify_slack_credential", f"No credential {credential_id} in this organization.")
    elif kind not in (accepted := get_action("slack.message").accepted_credential_kinds()):
        add("notify_slack_credential", f"Failure notices post with a {' or '.join(accepted)} credential, not {kind}.")
    if not workflow.notify_slack_channel.strip():
        add("notify_slack_channel", "Name the Slack channel for the failure notices, e.g. #alerts.")
