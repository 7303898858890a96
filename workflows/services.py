"""The only place that writes workflows and runs.

``workflow_create``/``workflow_update``/``workflow_delete`` validate a whole
definition (steps, action configs, templates, credentials, schedule) before
writing anything, bump ``version`` and keep the beat schedule in sync.
``run_accept`` records an event (the one entry point for webhooks, schedules
and manual runs) and dispatches it after commit; ``run_replay`` starts a new
run from the first step that did not succeed.

Validation problems raise ``WorkflowInvalid`` whose ``errors`` maps a field
path (``"schedule"``, ``"steps[1].config.url"``) to messages; the API turns it
into a 400 with the same field names.
"""

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Organization, User
from integrations.errors import ConfigError
from integrations.models import Credential
from integrations.registry import UnknownAction, all_actions, get_action

from . import schedules, signatures, storable, templating
from .models import (
    STEP_DEFAULTS,
    STEP_SPEC_FIELDS,
    Run,
    RunStatus,
    RunTrigger,
    Step,
    StepRun,
    StepRunStatus,
    TriggerType,
    Workflow,
    new_webhook_token,
)

logger = logging.getLogger(__name__)

STEP_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STEPS = 50
# Retry policy bounds. backoff_max_seconds stays below the Redis visibility
# timeout (1 h by default), or a delayed retry could be delivered twice.
LIMITS = {
    "max_retries": (0, 25),
    "backoff_seconds": (0.0, 3600.0),
    "backoff_max_seconds": (0.0, 3600.0),
    "timeout_seconds": (0.1, 900.0),
}
WORKFLOW_FIELDS = (
    *("name", "description", "is_active", "trigger_type", "webhook_secret", "schedule", "timezone"),
    *signatures.SIGNING_FIELDS,
)


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


# -- workflows ---------------------------------------------------------------
def workflow_create(
    *,
    organization: Organization,
    name: str,
    created_by: User | None = None,
    description: str = "",
    is_active: bool = True,
    trigger_type: str = TriggerType.MANUAL,
    webhook_secret: str = "",
    schedule: str = "",
    timezone: str = "UTC",  # noqa: A002 - the field's name
    steps: Sequence[Mapping[str, Any]] = (),
    **signing: Any,
) -> Workflow:
    """``signing``: the fields of ``signatures.SIGNING_FIELDS`` (scheme, previous secret, hmac options)."""
    unknown = set(signing) - set(signatures.SIGNING_FIELDS)
    if unknown:
        raise TypeError(f"workflow_create got unknown fields: {sorted(unknown)}")
    workflow = Workflow(
        **signing,
        organization=organization,
        name=name,
        description=description,
        is_active=is_active,
        trigger_type=trigger_type,
        webhook_secret=webhook_secret,
        schedule=schedule,
        timezone=timezone,
        created_by=created_by,
    )
    step_rows = _validate(workflow, steps)
    with transaction.atomic():
        workflow.save()
        _write_steps(workflow, step_rows)
        schedules.schedule_sync(workflow)
    return workflow


def workflow_update(
    *, workflow: Workflow, steps: Sequence[Mapping[str, Any]] | None = None, **changes: Any
) -> Workflow:
    """Change fields (``name``, ``is_active``, ``schedule``...) and/or replace all steps.

    ``steps=None`` keeps the steps; a list replaces them (positions from list order).
    Submitting what is already stored (an admin page saved untouched) writes
    nothing and keeps the version: a version names a definition, not a save.
    """
    unknown = set(changes) - set(WORKFLOW_FIELDS)
    if unknown:
        raise TypeError(f"workflow_update got unknown fields: {sorted(unknown)}")
    with transaction.atomic():
        # Apply the changes to the locked row, not to the caller's instance: that
        # one may be stale (a token rotated since it was read must not come back).
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        changed = [field for field, value in changes.items() if getattr(locked, field) != value]
        for field, value in changes.items():
            setattr(locked, field, value)
        stored = list(locked.steps.order_by("position"))
        replace = steps is not None
        if steps is None:
            steps = [_step_as_spec(step) for step in stored]
        step_rows = _validate(locked, steps)
        replace = replace and _step_signatures(step_rows) != _step_signatures(stored)
        if changed or replace:
            locked.version += 1
            locked.save(update_fields=[*changed, "version", "updated_at"])
            if replace:
                _write_steps(locked, step_rows)
            schedules.schedule_sync(locked)
    workflow.refresh_from_db()
    return workflow


def workflow_delete(*, workflow: Workflow) -> None:
    with transaction.atomic():
        schedules.schedule_remove(workflow)
        workflow.delete()


def workflow_rotate_webhook_token(*, workflow: Workflow) -> Workflow:
    """Give the workflow a new webhook URL; the old one answers 404 from now on."""
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        workflow.webhook_token = new_webhook_token()
        workflow.version = locked.version + 1
        workflow.save(update_fields=["webhook_token", "version", "updated_at"])
    return workflow


def workflow_validate(*, workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> None:
    """Check a definition without saving anything (the admin validates its inline with it)."""
    _validate(workflow, steps)


def _step_as_spec(step: Step) -> dict[str, Any]:
    return {**{field: getattr(step, field) for field in STEP_SPEC_FIELDS}, "credential": step.credential}


def _step_signatures(rows: Sequence[Step]) -> list[tuple]:
    """What makes two step lists the same definition (positions come from the order)."""
    # Config as canonical JSON: ``True == 1`` and ``1 == 1.0`` in Python, not in a definition.
    return [
        (
            *(getattr(row, field) for field in STEP_SPEC_FIELDS if field != "config"),
            json.dumps(row.config, sort_keys=True),
            row.credential_id,
        )
        for row in rows
    ]


def _write_steps(workflow: Workflow, rows: list[Step]) -> None:
    workflow.steps.all().delete()
    for position, step in enumerate(rows):
        step.workflow = workflow
        step.position = position
    Step.objects.bulk_create(rows)


def _validate(workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> list[Step]:
    """Check the whole definition; raise WorkflowInvalid naming every bad field."""
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
    for field in WORKFLOW_FIELDS:
        value = getattr(workflow, field)
        if isinstance(value, str) and storable.NUL in value:
            add(field, f"{field} contains a NUL character (\\u0000), which cannot be stored.")
    for field, message in signatures.validate({f: getattr(workflow, f) for f in WORKFLOW_FIELDS}).items():
        add(field, message)
    if len(steps) > MAX_STEPS:
        add("steps", f"A workflow has at most {MAX_STEPS} steps; got {len(steps)}.")

    rows: list[Step] = []
    seen_keys: list[str] = []
    for index, spec in enumerate(steps):
        rows.append(_validate_step(workflow, index, spec, seen_keys, add))
    if errors:
        raise WorkflowInvalid(errors)
    return rows


def _validate_step(workflow: Workflow, index: int, spec: Mapping[str, Any], seen_keys: list[str], add) -> Step:
    where = f"steps[{index}]"
    if not isinstance(spec, Mapping):
        add(where, "A step must be an object.")
        return Step()
    key = spec.get("key") or ""
    label = f"step {key!r}" if key else f"step #{index + 1}"
    if not isinstance(key, str) or not STEP_KEY_RE.match(key):
        add(
            f"{where}.key",
            f"{label}: a key is required: lowercase letters, digits and underscores, starting with a letter.",
        )
    elif key in seen_keys:
        add(f"{where}.key", f"{label}: the key {key!r} is used by an earlier step; keys must be unique.")
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
    unstorable = storable.problem(config, "config")
    if unstorable is not None:
        path, reason = unstorable
        add(f"{where}.{path}", f"{label}: {path} {reason}.")
        config = {}
    if action is not None:
        prepared = prepare_config(action, config)
        try:
            action.validate_config(prepared)
        except ConfigError as exc:
            add(f"{where}.{exc.field}", f"{label}: {exc.message}")
        for path, text in templating.iter_strings(prepared):
            try:
                templating.check_template(text, earlier_steps=seen_keys)
            except templating.TemplateError as exc:
                add(f"{where}.{path}", f"{label} {path}: {exc.message}")

    credential = _resolve_credential(workflow, spec.get("credential"), action, label, f"{where}.credential", add)
    if action is not None and credential is not None and credential.kind in action.accepted_credential_kinds():
        try:
            action.validate_credential_use(prepare_config(action, config), credential.public_data)
        except ConfigError as exc:
            add(f"{where}.{exc.field}", f"{label}: {exc.message}")

    policy: dict[str, Any] = {}
    for field, default in STEP_DEFAULTS.items():
        value = spec.get(field)
        if value is None:
            value = default
        low, high = LIMITS[field]
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
    if isinstance(key, str):
        seen_keys.append(key)
    return Step(key=key, action_type=action_type, config=config, credential=credential, **policy)


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


def prepare_config(action: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Read bare expressions in an action's ``expression_fields`` as ``{{ ... }}``."""
    fields = getattr(action, "expression_fields", ())
    if not fields:
        return config
    prepared = dict(config)
    for field in fields:
        value = prepared.get(field)
        if isinstance(value, str) and value.strip() and not templating.is_template(value):
            prepared[field] = "{{ " + value.strip() + " }}"
    return prepared


# -- runs ----------------------------------------------------------------------
def workflow_definition(workflow: Workflow) -> dict[str, Any]:
    """The snapshot a run executes: editing the workflow later never changes it."""
    return {
        "workflow": {"id": workflow.pk, "name": workflow.name, "version": workflow.version},
        "steps": [
            {
                "position": step.position,
                **{field: getattr(step, field) for field in STEP_SPEC_FIELDS},
                "credential_id": step.credential_id,
            }
            for step in workflow.steps.order_by("position")
        ],
    }


def run_accept(
    *,
    workflow: Workflow,
    trigger: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """Record an event as a queued Run and dispatch it after commit.

    Returns ``(run, created)``; a repeated ``idempotency_key`` for the same
    workflow returns the original run and ``created=False``. A payload the
    database cannot store raises ``PayloadInvalid`` naming the value (paths as
    templates see them: ``trigger.body.x``) and records nothing.
    """
    try:
        storable.ensure(dict(payload), path="trigger")
        storable.ensure(idempotency_key, path="idempotency key")
    except storable.NotStorable as exc:
        raise PayloadInvalid({"payload": [f"{exc}."]}) from None
    if idempotency_key:
        existing = Run.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    definition = workflow_definition(workflow)
    try:
        with transaction.atomic():
            run = Run.objects.create(
                workflow=workflow,
                workflow_version=workflow.version,
                definition=definition,
                trigger=trigger,
                payload=dict(payload),
                idempotency_key=idempotency_key or None,
            )
            todo = _create_step_runs(run, definition)
    except IntegrityError:
        # Two deliveries of the same event raced; the other one won.
        existing = Run.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if idempotency_key and existing is not None:
            return existing, False
        raise
    _dispatch_on_commit(run, todo)
    return run, True


def run_replay(*, run: Run, from_step: str | None = None) -> Run:
    """A new run of the same definition and payload, reusing the outputs of the
    steps before the first one that did not succeed (or before ``from_step``)."""
    if run.status not in (RunStatus.FAILED, RunStatus.FILTERED):
        raise ReplayNotAllowed(
            {"status": [f"Only failed, dead-lettered or filtered runs can be replayed; this run is {run.status}."]}
        )
    previous = {sr.position: sr for sr in run.step_runs.all()}
    steps = run.definition.get("steps", [])
    if from_step:
        start = next((s["position"] for s in steps if s["key"] == from_step), None)
        if start is None:
            known = ", ".join(s["key"] for s in steps)
            raise ReplayNotAllowed({"from_step": [f"This run has no step {from_step!r} (steps: {known})."]})
        for s in steps:
            prior = previous.get(s["position"])
            if s["position"] < start and (prior is None or prior.status != StepRunStatus.SUCCEEDED):
                raise ReplayNotAllowed(
                    {"from_step": [f"Cannot start at {from_step!r}: earlier step {s['key']!r} did not succeed."]}
                )
    else:
        start = _first_step_to_redo(run, steps, previous)
    with transaction.atomic():
        replay = Run.objects.create(
            workflow_id=run.workflow_id,
            workflow_version=run.workflow_version,
            definition=run.definition,
            trigger=RunTrigger.REPLAY,
            payload=run.payload,
            replay_of=run,
        )
        todo = _create_step_runs(replay, run.definition, reuse={p: sr for p, sr in previous.items() if p < start})
    _dispatch_on_commit(replay, todo)
    return replay


def _first_step_to_redo(run: Run, steps: list[dict], previous: dict[int, StepRun]) -> int:
    for s in steps:
        prior = previous.get(s["position"])
        if prior is None or prior.status != StepRunStatus.SUCCEEDED:
            return s["position"]
        if (
            run.status == RunStatus.FILTERED
            and s["action_type"] == "filter"
            and isinstance(prior.output, dict)
            and prior.output.get("passed") is False
        ):
            return s["position"]  # the filter that stopped the run is evaluated again
    return len(steps)


def _create_step_runs(run: Run, definition: dict[str, Any], reuse: dict[int, StepRun] | None = None) -> list[int]:
    """Record the run's step runs; returns the positions still to execute."""
    reuse = reuse or {}
    rows = []
    for s in definition.get("steps", []):
        prior = reuse.get(s["position"])
        if prior is not None:
            rows.append(
                StepRun(
                    run=run,
                    position=s["position"],
                    key=s["key"],
                    action_type=s["action_type"],
                    status=StepRunStatus.SUCCEEDED,
                    rendered_config=prior.rendered_config,
                    output=prior.output,
                    started_at=prior.started_at,
                    finished_at=prior.finished_at,
                    duration_ms=prior.duration_ms,
                    reused=True,
                )
            )
        else:
            rows.append(StepRun(run=run, position=s["position"], key=s["key"], action_type=s["action_type"]))
    StepRun.objects.bulk_create(rows)
    return [row.position for row in rows if row.status == StepRunStatus.PENDING]


def _dispatch_on_commit(run: Run, positions: list[int]) -> None:
    """Send the run once it is committed; a broker that is down loses nothing.

    The run is recorded whatever happens here: failing the request now would
    make the sender retry and record the event twice. An unsent run stays
    ``queued`` and the recovery sweeper dispatches it once the broker is back.
    """
    from . import engine  # engine imports the tasks module, which imports this one

    run_id = run.pk

    def send() -> None:
        try:
            # The run was just written: send what we know instead of reading it back.
            if positions:
                engine.dispatch_recorded(run, positions)
            else:
                engine.dispatch(run_id)  # nothing left to execute: dispatch finishes the run
        except Exception:  # noqa: BLE001 - kombu OperationalError, redis/socket errors, a full disk...
            logger.exception("run %s is recorded but could not be sent to the broker; the sweeper will", run_id)

    transaction.on_commit(send)


def run_now_payload(*, body: Any, user: User | None = None) -> dict[str, Any]:
    """The payload of a manual run: the same shape as a webhook's."""
    return {
        "method": None,
        "headers": {},
        "query": {},
        "body": body,
        "requested_by": user.email if user is not None else None,
        "requested_at": timezone.now().isoformat(),
    }


def run_schedule_fire(*, workflow_id: int, fired_at: Any) -> Run | None:
    """A beat firing: one run per workflow and scheduled minute.

    ``fired_at`` is the time the firing was scheduled for (not when a worker
    got to it), so a delayed or redelivered firing is the same run.
    """
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None or not workflow.is_active or workflow.trigger_type != TriggerType.SCHEDULE:
        logger.info("schedule firing for workflow %s ignored: missing, inactive or not scheduled", workflow_id)
        return None
    minute = fired_at.replace(second=0, microsecond=0)
    body = {"fired_at": fired_at.isoformat(), "schedule": workflow.schedule, "timezone": workflow.timezone}
    payload = {"method": None, "headers": {}, "query": {}, "body": body, "fired_at": fired_at.isoformat()}
    run, _ = run_accept(
        workflow=workflow,
        trigger=RunTrigger.SCHEDULE,
        payload=payload,
        idempotency_key=f"schedule:{minute.isoformat()}",
    )
    return run
