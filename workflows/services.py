"""The only place that writes workflows and runs.

``workflow_create``/``workflow_update``/``workflow_delete`` validate a whole
definition (steps, action configs, templates, credentials, schedule) before
writing anything, bump ``version``, record that version's definition once (a
``WorkflowVersion`` row every run of it points at) and keep the beat schedule
in sync.
``run_accept`` records an event (the one entry point for webhooks, schedules
and manual runs) and dispatches it after commit; ``run_replay`` starts a new
run from the first step that did not succeed.

Validation lives in ``workflows.validation``; its ``WorkflowInvalid`` (a field
path -> messages, which the API turns into a 400 naming the same fields) and
the payload/replay errors are part of this module's interface.
"""

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Model
from django.utils import timezone

from accounts.models import Organization, User
from integrations import storable
from integrations.oauth.selectors import needing_reconnect

from .execution import dispatch, flow
from .flow import tree
from .intake import signatures
from .models import (
    STEP_SPEC_FIELDS,
    Run,
    RunStatus,
    RunTrigger,
    Step,
    StepRun,
    StepRunStatus,
    TestRun,
    TestRunStatus,
    TriggerType,
    Workflow,
    WorkflowVersion,
    new_webhook_token,
)
from .scheduling import schedules
from .validation import (
    UNVERSIONED_FIELDS,
    WORKFLOW_FIELDS,
    PayloadInvalid,
    ReplayNotAllowed,
    WorkflowInvalid,
    validate_definition,
)

__all__ = [
    "PayloadInvalid",
    "ReplayNotAllowed",
    "TestRunLimited",
    "WorkflowInvalid",
    "run_accept",
    "run_now_payload",
    "run_payload",
    "run_replay",
    "run_schedule_fire",
    "run_schedule_fire_many",
    "test_run_execute",
    "test_run_start",
    "workflow_create",
    "workflow_current_version",
    "workflow_delete",
    "workflow_rotate_webhook_token",
    "workflow_update",
    "workflow_validate",
]

logger = logging.getLogger(__name__)


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
    webhook_body_as_file: bool = False,
    steps: Sequence[Mapping[str, Any]] = (),
    on_failure: Sequence[Mapping[str, Any]] | None = None,
    notify_on_failure: bool = True,
    notify_slack_channel: str = "",
    notify_slack_credential_id: int | None = None,
    **signing: Any,
) -> Workflow:
    """``signing``: the fields of ``signatures.SIGNING_FIELDS`` (scheme, previous secret, hmac options).
    ``on_failure``: the error path, steps run once when a run fails (validated like ``steps``)."""
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
        webhook_body_as_file=webhook_body_as_file,
        on_failure=list(on_failure) if isinstance(on_failure, list | tuple) else on_failure or [],
        created_by=created_by,
        notify_on_failure=notify_on_failure,
        notify_slack_channel=notify_slack_channel,
        notify_slack_credential_id=notify_slack_credential_id,
    )
    step_rows = validate_definition(workflow, steps)
    with transaction.atomic():
        workflow.save()
        _write_steps(workflow, step_rows)
        _record_version(workflow)
        schedules.schedule_sync(workflow)
    return workflow


def workflow_update(
    *,
    workflow: Workflow,
    steps: Sequence[Mapping[str, Any]] | None = None,
    organization_id: int | None = None,
    **changes: Any,
) -> Workflow:
    """Change fields (``name``, ``is_active``, ``schedule``...) and/or replace all steps.

    ``steps=None`` keeps the steps; a list replaces them (positions from list order).
    ``organization_id``, when given, must be the workflow's own: a workflow never
    moves to another organization (its credentials and runs belong to this one).
    Submitting what is already stored (an admin page saved untouched) writes
    nothing and keeps the version: a version names a definition, not a save.
    Switching a workflow on or off and its failure-notice settings
    (``UNVERSIONED_FIELDS``) are saved without a new version either.
    """
    unknown = set(changes) - set(WORKFLOW_FIELDS)
    if unknown:
        raise TypeError(f"workflow_update got unknown fields: {sorted(unknown)}")
    if organization_id is not None and organization_id != workflow.organization_id:
        raise ValidationError({"organization": ["A workflow cannot move to another organization."]})
    with transaction.atomic():
        # Apply the changes to the locked row, not to the caller's instance: that
        # one may be stale (a token rotated since it was read must not come back).
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        stored_on_failure = _canonical(locked.on_failure)
        changed = [field for field, value in changes.items() if getattr(locked, field) != value]
        for field, value in changes.items():
            setattr(locked, field, value)
        stored = list(locked.steps.order_by("position"))
        replace = steps is not None
        if steps is None:
            steps = [_step_as_spec(step) for step in stored]
        step_rows = validate_definition(locked, steps)  # leaves locked.on_failure normalized
        # The error path is compared as validation normalized it: the same steps resent are no change.
        changed = [field for field in changed if field != "on_failure"]
        if _canonical(locked.on_failure) != stored_on_failure:
            changed.append("on_failure")
        replace = replace and _step_signatures(step_rows) != _step_signatures(stored)
        if replace or set(changed) - UNVERSIONED_FIELDS:
            locked.version += 1
            locked.save(update_fields=[*changed, "version", "updated_at"])
            if replace:
                _write_steps(locked, step_rows)
            _record_version(locked)
            schedules.schedule_sync(locked)
        elif changed:
            locked.save(update_fields=[*changed, "updated_at"])
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
        _record_version(workflow)
    return workflow


def workflow_validate(*, workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> None:
    """Check a definition without saving anything (the admin validates its inline with it)."""
    validate_definition(workflow, steps)


def _step_as_spec(step: Step) -> dict[str, Any]:
    return {**{field: getattr(step, field) for field in STEP_SPEC_FIELDS}, "credential": step.credential}


def _canonical(value: Any) -> str:
    """JSON with sorted keys: ``True == 1`` and ``1 == 1.0`` in Python, not in a definition."""
    return json.dumps(value, sort_keys=True)


def _step_signatures(rows: Sequence[Step]) -> list[tuple[Any, ...]]:
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


def _record_version(workflow: Workflow) -> WorkflowVersion:
    """Store the definition of the workflow's new version, once for all its runs."""
    return WorkflowVersion.objects.create(
        workflow=workflow, number=workflow.version, definition=workflow_definition(workflow)
    )


def workflow_current_version(workflow: Workflow) -> WorkflowVersion:
    """The version row runs accepted now execute: one indexed lookup.

    Created on the spot when missing (a workflow saved before versions were
    stored, or whose version was bumped outside these services); a concurrent
    creator wins the unique constraint and its row is used.
    """
    version = WorkflowVersion.objects.filter(workflow=workflow, number=workflow.version).first()
    if version is not None:
        return version
    version, _ = WorkflowVersion.objects.get_or_create(
        workflow=workflow, number=workflow.version, defaults={"definition": workflow_definition(workflow)}
    )
    return version


# -- runs ----------------------------------------------------------------------
def workflow_definition(workflow: Workflow) -> dict[str, Any]:
    """The snapshot a run executes: editing the workflow later never changes it.

    ``steps`` (top-level steps, with their positions), their nested step lists inside their
    configs (``workflows.flow.tree``), and ``on_failure``, the error path. Every step of the
    tree has the same fields, ``credential_id`` included (nested and error-path specs also
    keep ``credential``, as they were saved).
    """
    definition = {
        "workflow": {"id": workflow.pk, "name": workflow.name, "version": workflow.version},
        "steps": [
            {
                "position": step.position,
                **{field: getattr(step, field) for field in STEP_SPEC_FIELDS},
                "config": copy.deepcopy(step.config),
                "credential_id": step.credential_id,
            }
            for step in workflow.steps.order_by("position")
        ],
        "on_failure": copy.deepcopy(workflow.on_failure or []),
    }
    for located in tree.walk_definition(definition):
        if located.depth > 1 or located.on_failure:
            spec = cast("dict[str, Any]", located.spec)
            spec["credential_id"] = spec.get("credential")
    return definition


def run_accept(
    *,
    workflow: Workflow,
    trigger: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
    version: WorkflowVersion | None = None,
    received_at: datetime | None = None,
) -> tuple[Run, bool]:
    """Record an event as a queued Run and dispatch it after commit.

    Returns ``(run, created)``; a repeated ``idempotency_key`` for the same
    workflow returns the original run and ``created=False``. A payload the
    database cannot store raises ``PayloadInvalid`` naming the value (paths as
    templates see them: ``trigger.body.x``) and records nothing. ``version``:
    the workflow's current version when the caller has read it already (the
    webhook view reads it with the workflow); otherwise it is looked up.
    ``received_at``: when the event arrived, now by default (a scripted day of
    runs for Insights' tests and benches passes past times; the run is executed as any other).

    The run's INSERT skips a key that is taken (``ON CONFLICT DO NOTHING``),
    so a repeated event costs no error and a new one no lookup beforehand;
    the run and its step runs are written together (``_insert_run_with_steps``).
    """
    try:
        storable.ensure(dict(payload), path="trigger")
        storable.ensure(idempotency_key, path="idempotency key")
    except storable.NotStorable as exc:
        raise PayloadInvalid({"payload": [f"{exc}."]}) from None
    if version is None:
        version = workflow_current_version(workflow)
    run = Run(
        workflow=workflow,
        workflow_version=version.number,
        version=version,
        trigger=trigger,
        payload=dict(payload),
        idempotency_key=idempotency_key or None,
        created_at=received_at or timezone.now(),
    )
    steps = _step_run_rows(run, version.definition)
    created = _insert_run_with_steps(run, steps)
    if not created:
        # The same event was accepted before (or a concurrent delivery of it just committed).
        return Run.objects.get(workflow=workflow, idempotency_key=run.idempotency_key), False
    _dispatch_on_commit(run, [step.position for step in steps])
    return run, True


# The unique constraint "unique_run_idempotency_key" (models.Run), as an ON CONFLICT target.
_RUN_KEY_TAKEN = 'ON CONFLICT ("workflow_id", "idempotency_key") WHERE "idempotency_key" IS NOT NULL DO NOTHING'


def _insert_run_with_steps(run: Run, steps: list[StepRun]) -> bool:
    """Write a new run and its step runs, atomically; False, writing nothing, when its key is taken.

    On PostgreSQL one statement writes both (a data-modifying ``WITH``; the step
    runs only when the run was written): no BEGIN and COMMIT round trips, 0.3 ms
    less CPU per webhook than two INSERTs in a transaction (bench/README.md,
    "intake"). Elsewhere (SQLite) two INSERTs in a transaction.
    """
    on_conflict = _RUN_KEY_TAKEN if run.idempotency_key else ""
    db = transaction.get_connection()
    if db.vendor != "postgresql" or not steps:
        with transaction.atomic(using=db.alias):
            created = _insert_rows([run], on_conflict=on_conflict) == 1
            if created:
                _insert_rows(steps)
        return created
    run_sql, run_values = _insert_statement([run], db)
    steps_sql, steps_values = _insert_statement(steps, db, only_if="EXISTS (SELECT FROM run)")
    with db.cursor() as cursor:
        cursor.execute(
            f"WITH run AS ({run_sql} {on_conflict} RETURNING 1), steps AS ({steps_sql}) SELECT count(*) FROM run",  # noqa: S608 - built from the models; values are parameters
            [*run_values, *steps_values],
        )
        row = cursor.fetchone()
        created = row is not None and bool(row[0] == 1)
    if created:
        _mark_saved([run, *steps], db)
    return created


def _insert_rows(rows: Sequence[Model], *, on_conflict: str = "") -> int:
    """INSERT ``rows`` (instances of one model) in one statement; returns how many were written.

    What ``bulk_create`` does, for the run-accept path: building its statement
    cost more CPU than PostgreSQL takes to run it (bench/README.md, "intake"),
    and it cannot say whether ``ON CONFLICT DO NOTHING`` skipped a row.
    """
    if not rows:
        return 0
    db = transaction.get_connection()  # this thread's connection, not the proxy: looked up once, not per field
    sql, values = _insert_statement(rows, db)
    with db.cursor() as cursor:
        cursor.execute(f"{sql} {on_conflict}", values)
        written = int(cursor.rowcount)
    _mark_saved(rows, db)
    return written


def _insert_statement(rows: Sequence[Model], db: Any, *, only_if: str = "") -> tuple[str, list[Any]]:
    """``INSERT INTO <table> (<columns>) VALUES ...`` for ``rows`` of one model, and its parameters.

    Every field is written as ``save()`` would write it (``pre_save``, then the
    field's own conversion for this database); a primary key the database
    generates is left to it and not read back. ``only_if``: a condition the
    rows are inserted under (``INSERT ... SELECT ... WHERE``; PostgreSQL), each
    value cast to its column's type as a plain VALUES list would.
    """
    model = type(rows[0])
    fields = [f for f in model._meta.concrete_fields if not f.generated and not (f.primary_key and f.db_returning)]
    quote = db.ops.quote_name
    values = [field.get_db_prep_save(field.pre_save(row, True), db) for row in rows for field in fields]
    if only_if:
        one_row = "(" + ", ".join(f"%s::{field.cast_db_type(db)}" for field in fields) + ")"
    else:
        one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    rows_sql = ", ".join([one_row] * len(rows))
    into = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608 - names from the model; values are parameters
    if only_if:
        return f"{into} SELECT * FROM (VALUES {rows_sql}) AS v WHERE {only_if}", values  # noqa: S608 - as above
    return f"{into} VALUES {rows_sql}", values


def _mark_saved(rows: Sequence[Model], db: Any) -> None:
    for row in rows:
        row._state.adding = False
        row._state.db = db.alias


REPLAY_VERSIONS = ("original", "current")


def run_replay(*, run: Run, from_step: str | None = None, version: str = "original") -> Run:
    """A new run of the same payload, reusing the outputs of the steps before the
    first one that did not succeed (or before ``from_step``).

    ``version="original"`` executes the definition the run executed (as it ran);
    ``version="current"`` executes the workflow as it is now (fix a step, then
    replay): steps are matched to the old run by key, and the outputs of the
    leading steps that succeeded before are reused.
    """
    if version not in REPLAY_VERSIONS:
        raise ReplayNotAllowed({"version": [f"version must be one of {', '.join(REPLAY_VERSIONS)}, not {version!r}."]})
    if not run.is_replayable:
        raise ReplayNotAllowed(
            {"status": [f"Only failed, dead-lettered or filtered runs can be replayed; this run is {run.status}."]}
        )
    if version == "current":
        version_row = workflow_current_version(Workflow.objects.get(pk=run.workflow_id))
    else:
        version_row = run.version  # the original definition, even if the workflow changed since
    if tree.is_flow(version_row.definition):
        return _replay_flow(run, version_row, from_step)
    definition = version_row.definition
    previous = {sr.position: sr for sr in run.step_runs.all()}
    if version == "current":
        # The current steps, each paired with the old step run of the same key: positions may have moved.
        by_key = {sr.key: sr for sr in previous.values()}
        previous = {s["position"]: by_key[s["key"]] for s in definition["steps"] if s["key"] in by_key}
    steps = definition.get("steps", [])
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
    _refuse_dead_connections(run.workflow.organization_id, [s for s in steps if s["position"] >= start])
    with transaction.atomic():
        replay = Run.objects.create(
            workflow_id=run.workflow_id,
            workflow_version=version_row.number,
            version=version_row,
            trigger=RunTrigger.REPLAY,
            payload=run.payload,
            replay_of=run,
        )
        todo = _create_step_runs(replay, definition, reuse={p: sr for p, sr in previous.items() if p < start})
    _dispatch_on_commit(replay, todo)
    return replay


def _replay_flow(run: Run, version_row: WorkflowVersion, from_step: str | None) -> Run:
    """A flow run's replay (issue 19): it walks the tree again from the start, and each instance
    that succeeded before its start (``_flow_replay_point``) is written with the output it had
    (``reused``, by path: by key in the current version) instead of running again; the branch and
    loop instances decide again (no outside call), so the failed iteration and what follows run."""
    definition = version_row.definition
    start = _flow_replay_point(run, definition, from_step)
    _refuse_dead_connections(run.workflow.organization_id, [dict(s.spec) for s in tree.walk_definition(definition)])
    with transaction.atomic():
        replay = Run.objects.create(
            workflow_id=run.workflow_id,
            workflow_version=version_row.number,
            version=version_row,
            trigger=RunTrigger.REPLAY,
            payload=run.payload,
            replay_of=run,
            replay_from=start,
        )
        flow.start(replay)
    return replay


def _flow_replay_point(run: Run, definition: dict[str, Any], from_step: str | None) -> str:
    """The instance path a flow run's replay starts at ("" = the start), by the straight rule:
    ``from_step`` (a key; inside a loop, an instance's path such as ``lines[1]/ratio``) when no
    instance before it failed, else the first instance that failed (or filtered the run)."""
    order = flow.definition_order(definition)
    rows = list(run.step_runs.filter(error_path=False).values_list("pk", "parent_id", "path", "key", "status"))
    at = {pk: (flow.order_key(order, path or key), path or key) for pk, _, path, key, _ in rows}
    failed = {pk for pk, _, _, _, status in rows if status == StepRunStatus.FAILED}
    if not from_step:
        ended = {pk for pk, _, path, _, status in rows if status == StepRunStatus.FILTERED and "[" not in path}
        failed |= ended if run.status == RunStatus.FILTERED else set()
    # A branch or loop that failed (or was filtered) with a step in it: that step is where it happened.
    failed -= {parent for pk, parent, *_ in rows if pk in failed}
    if not from_step:
        starts = sorted((at[pk][0], at[pk][1]) for pk in failed if at[pk][0] is not None)
        return starts[0][1] if starts else ""
    located = tree.by_key(definition)
    if "[" in from_step:
        if from_step not in {path for _, path in at.values()}:
            loops = sorted(path for _, path in at.values() if "[" in path)[:5]
            raise ReplayNotAllowed(
                {"from_step": [f"This run has no step instance {from_step!r} (inside loops: {', '.join(loops)})."]}
            )
    elif from_step not in located or located[from_step].on_failure:
        known = ", ".join(s.key for s in tree.walk(definition.get("steps") or []))
        raise ReplayNotAllowed({"from_step": [f"This run has no step {from_step!r} (steps: {known})."]})
    elif located[from_step].in_loop:
        example = next((path for _, path in at.values() if path.endswith(f"]/{from_step}")), f"<loop>[0]/{from_step}")
        raise ReplayNotAllowed(
            {"from_step": [f"Step {from_step!r} runs once per item: start at one instance, e.g. {example!r}."]}
        )
    start = flow.order_key(order, from_step)
    if start is None:
        raise ReplayNotAllowed({"from_step": [f"Step {from_step!r} is not in the version replayed."]})
    for pk in failed:
        earlier, path = at[pk]
        if earlier is not None and earlier < start:
            raise ReplayNotAllowed(
                {"from_step": [f"Cannot start at {from_step!r}: earlier step {path!r} did not succeed."]}
            )
    return from_step


def _refuse_dead_connections(organization_id: int, steps: list[dict[str, Any]]) -> None:
    """A replay whose steps need a connection that needs reconnecting would only fail again: refused."""
    dead = needing_reconnect([s.get("credential_id") for s in steps], organization_id)
    if dead:
        raise ReplayNotAllowed({"credential": [f"Cannot replay yet: {message}." for message in dead.values()]})


def _first_step_to_redo(run: Run, steps: list[dict[str, Any]], previous: dict[int, StepRun]) -> int:
    for s in steps:
        prior = previous.get(s["position"])
        if prior is None or prior.status != StepRunStatus.SUCCEEDED:
            return int(s["position"])
        if (
            run.status == RunStatus.FILTERED
            and s["action_type"] == "filter"
            and isinstance(prior.output, dict)
            and prior.output.get("passed") is False
        ):
            return int(s["position"])  # the filter that stopped the run is evaluated again
    return len(steps)


def _create_step_runs(run: Run, definition: dict[str, Any], reuse: dict[int, StepRun] | None = None) -> list[int]:
    """Record the run's step runs; returns the positions still to execute."""
    rows = _step_run_rows(run, definition, reuse)
    _insert_rows(rows)
    return [row.position for row in rows if row.status == StepRunStatus.PENDING]


def _step_run_rows(run: Run, definition: dict[str, Any], reuse: dict[int, StepRun] | None = None) -> list[StepRun]:
    """The run's step runs, not saved: pending, or succeeded with the output reused from ``reuse``.

    A flow definition (issue 19) gets the rows of its first segment only (up to its first control
    step); the engine writes the others as the run reaches them (``workflows.execution.flow``).
    """
    reuse = reuse or {}
    rows = []
    steps = definition.get("steps", [])
    if tree.is_flow(definition):
        steps = list(tree.segment(steps, 0))
    for s in steps:
        prior = reuse.get(s["position"])
        if prior is not None:
            rows.append(
                StepRun(
                    run=run,
                    position=s["position"],
                    key=s["key"],
                    path=s["key"],
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
            rows.append(
                StepRun(run=run, position=s["position"], key=s["key"], path=s["key"], action_type=s["action_type"])
            )
    return rows


def _dispatch_on_commit(run: Run, positions: list[int]) -> None:
    """Send the run once it is committed; a broker that is down loses nothing.

    The run is recorded whatever happens here: failing the request now would
    make the sender retry and record the event twice. An unsent run stays
    ``queued`` and the recovery sweeper dispatches it once the broker is back.
    """
    run_id = run.pk

    def send() -> None:
        try:
            # The run was just written: send what we know instead of reading it back.
            if positions:
                dispatch.dispatch_recorded(run, positions)
            else:
                dispatch.dispatch(run_id)  # nothing left to execute: dispatch finishes the run
        except Exception:  # noqa: BLE001 - kombu OperationalError, redis/socket errors, a full disk...
            logger.exception("run %s is recorded but could not be sent to the broker; the sweeper will", run_id)

    transaction.on_commit(send)


def run_payload(
    *,
    body: Any,
    method: str | None = None,
    headers: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What templates see as ``trigger``: the one payload shape of webhook, scheduled and manual runs.

    ``method``, ``headers`` and ``query`` come from a request (none for schedules
    and manual runs); ``extra`` is what the trigger knows besides (a webhook's
    ``content_type``, a schedule's ``fired_at``, who asked for a manual run).
    """
    return {"method": method, "headers": dict(headers or {}), "query": dict(query or {}), "body": body, **extra}


def run_now_payload(*, body: Any, user: User | None = None) -> dict[str, Any]:
    """The payload of a manual run: the same shape as a webhook's."""
    return run_payload(
        body=body, requested_by=user.email if user is not None else None, requested_at=timezone.now().isoformat()
    )


def run_schedule_fire(*, workflow_id: int, fired_at: Any) -> Run | None:
    """A beat firing: one run per workflow and scheduled minute.

    ``fired_at`` is the time the firing was scheduled for (not when a worker
    got to it), so a delayed or redelivered firing is the same run.
    """
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None or not workflow.is_active or workflow.trigger_type != TriggerType.SCHEDULE:
        logger.info("schedule firing for workflow %s ignored: missing, inactive or not scheduled", workflow_id)
        return None
    run, _ = run_accept(
        workflow=workflow,
        trigger=RunTrigger.SCHEDULE,
        payload=_schedule_payload(workflow, fired_at),
        idempotency_key=_schedule_key(fired_at),
    )
    return run


def start_manual_run(*, workflow: Workflow, body: Any, user: User | None = None) -> Run:
    """A manual run ("Run now", "Run again" in the admin; the API's run endpoint), its payload shaped as a webhook's.

    Inactive workflows run too: "inactive" switches their webhook and schedule
    off, and running one by hand is how it gets tried. Raises ``PayloadInvalid``.
    """
    run, _ = run_accept(workflow=workflow, trigger=RunTrigger.MANUAL, payload=run_now_payload(body=body, user=user))
    return run


# Firings recorded per transaction by run_schedule_fire_many.
SCHEDULE_RECORD_CHUNK = 500


def run_schedule_fire_many(*, workflow_ids: Sequence[int], fired_at: datetime) -> list[Run]:
    """Beat's firings of one scheduled minute for many workflows: ``run_schedule_fire`` in bulk.

    The same runs (payload, idempotency key, a run per workflow and minute) in
    a fixed number of statements per ``SCHEDULE_RECORD_CHUNK`` firings, each
    chunk committed; all of them are recorded before any is dispatched, so
    publishing (a message per run) does not delay recording the rest of the
    minute's firings. A firing whose run exists is skipped; if a concurrent
    delivery of the same firings wins the race, that chunk is taken one firing
    at a time.
    """
    ids = list(dict.fromkeys(workflow_ids))
    recorded: list[tuple[Run, list[int] | None]] = []
    for start in range(0, len(ids), SCHEDULE_RECORD_CHUNK):
        recorded.extend(_record_schedule_firings(ids[start : start + SCHEDULE_RECORD_CHUNK], fired_at))
    for run, positions in recorded:
        if positions is not None:
            _dispatch_on_commit(run, positions)
    return [run for run, _positions in recorded]


def _record_schedule_firings(workflow_ids: list[int], fired_at: datetime) -> list[tuple[Run, list[int] | None]]:
    """Record (commit) the runs of these firings; each with the positions to dispatch (None: already sent)."""
    key = _schedule_key(fired_at)
    workflows = list(Workflow.objects.filter(pk__in=workflow_ids, is_active=True, trigger_type=TriggerType.SCHEDULE))
    if len(workflows) < len(workflow_ids):
        ignored = sorted(set(workflow_ids) - {w.pk for w in workflows})
        logger.info("schedule firings for workflows %s ignored: missing, inactive or not scheduled", ignored)
    done = set(Run.objects.filter(workflow__in=workflows, idempotency_key=key).values_list("workflow_id", flat=True))
    todo = [w for w in workflows if w.pk not in done]
    if not todo:
        return []
    versions = {
        v.workflow_id: v for v in WorkflowVersion.objects.filter(workflow__in=todo, number=F("workflow__version"))
    }
    recorded: list[tuple[Run, list[int] | None]] = []
    step_runs: list[StepRun] = []
    for workflow in todo:
        version = versions.get(workflow.pk)
        if version is None or version.number != workflow.version:
            version = workflow_current_version(workflow)
        run = Run(
            workflow=workflow,
            workflow_version=workflow.version,
            version=version,
            trigger=RunTrigger.SCHEDULE,
            payload=_schedule_payload(workflow, fired_at),
            idempotency_key=key,
        )
        steps = _step_run_rows(run, version.definition)
        step_runs.extend(steps)
        recorded.append((run, [s.position for s in steps]))
    try:
        with transaction.atomic():
            Run.objects.bulk_create([run for run, _positions in recorded])
            StepRun.objects.bulk_create(step_runs)
    except IntegrityError:
        logger.info("schedule firings at %s raced with another delivery; recording them one by one", key)
        return [(fired, None) for w in todo if (fired := run_schedule_fire(workflow_id=w.pk, fired_at=fired_at))]
    return recorded


def _schedule_key(fired_at: datetime) -> str:
    """One run per workflow and scheduled minute."""
    return f"schedule:{fired_at.replace(second=0, microsecond=0).isoformat()}"


def _schedule_payload(workflow: Workflow, fired_at: datetime) -> dict[str, Any]:
    # Built from the workflow's validated schedule fields: always storable (see run_accept's check).
    body = {"fired_at": fired_at.isoformat(), "schedule": workflow.schedule, "timezone": workflow.timezone}
    return run_payload(body=body, fired_at=fired_at.isoformat())


# -- test runs -----------------------------------------------------------------
EXECUTE_TEST_RUN_TASK = "workflows.execute_test_run"
# A test that has not finished this long after the send timeout is taken as lost (no worker, a killed one):
# it no longer counts against its organization's limit.
TEST_RUN_STALE_GRACE_SECONDS = 60.0


class TestRunLimited(Exception):  # noqa: N818 - what the caller is told
    """The organization has ``POTAFLOW_TEST_RUN_MAX_CONCURRENT`` unfinished test runs already."""

    __test__ = False

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"This organization already has {limit} test runs in progress (POTAFLOW_TEST_RUN_MAX_CONCURRENT): "
            "wait for one to finish."
        )


def test_run_stale_before() -> datetime:
    """Unfinished test runs created before this are lost, not in progress."""
    seconds = settings.POTAFLOW_TEST_RUN_TIMEOUT_SECONDS + TEST_RUN_STALE_GRACE_SECONDS
    return timezone.now() - timedelta(seconds=seconds)


UNSAVED_WORKFLOW_NAME = "(not saved yet)"


def test_run_start(
    *,
    workflow: Workflow,
    user: User | None,
    payload: Any,
    steps: Sequence[Mapping[str, Any]] | None = None,
    send_step: str | None = None,
    on_failure: Sequence[Mapping[str, Any]] | None = None,
) -> TestRun:
    """Record a test of ``workflow`` and hand it to a worker (after commit).

    ``workflow`` may be unsaved (no id: a new workflow in the builder; its
    organization set). Unsaved ``steps`` are validated here, as saving would
    (``WorkflowInvalid``: a 400 before anything is queued). Raises ``TestRunLimited`` when the
    organization has ``POTAFLOW_TEST_RUN_MAX_CONCURRENT`` unfinished tests.
    """
    if on_failure is not None:  # an unsaved error path: checked with the steps it goes with
        workflow.on_failure = list(on_failure)
        if steps is None:
            steps = [_step_as_spec(step) for step in workflow.steps.order_by("position")] if workflow.pk else []
    if steps is not None:
        validate_definition(workflow, steps)  # leaves workflow.on_failure normalized
    limit = settings.POTAFLOW_TEST_RUN_MAX_CONCURRENT

    def busy() -> int:
        return TestRun.objects.filter(
            organization_id=workflow.organization_id,
            status__in=(TestRunStatus.QUEUED, TestRunStatus.RUNNING),
            created_at__gte=test_run_stale_before(),
        ).count()

    # Refused at once when the organization is busy: a burst of tests must not queue on the lock below.
    if limit > 0 and busy() >= limit:
        raise TestRunLimited(limit)
    with transaction.atomic():
        # One organization's test starts take turns: the count and the insert cannot interleave.
        Organization.objects.select_for_update().filter(pk=workflow.organization_id).exists()
        if limit > 0 and busy() >= limit:
            raise TestRunLimited(limit)
        test = TestRun.objects.create(
            workflow=workflow if workflow.pk is not None else None,
            organization_id=workflow.organization_id,
            created_by=user,
            request={
                "payload": payload,
                "steps": _json_steps(steps) if steps is not None else None,
                "send_step": send_step,
                "on_failure": workflow.on_failure if on_failure is not None else None,
            },
        )
        expires = settings.POTAFLOW_TEST_RUN_TIMEOUT_SECONDS + TEST_RUN_STALE_GRACE_SECONDS
        transaction.on_commit(
            lambda: current_app.send_task(EXECUTE_TEST_RUN_TASK, args=[str(test.pk)], expires=expires)
        )
    return test


def _json_steps(steps: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Step specs as JSON (a saved step's credential as its id)."""
    return [
        {**spec, "credential": getattr(spec.get("credential"), "pk", spec.get("credential"))}
        if isinstance(spec, Mapping)
        else spec
        for spec in steps
    ]


def test_run_execute(test_id: str) -> None:
    """On a worker: run the test (``workflows.dry_run``) and store its result; a second delivery does nothing."""
    from . import dry_run  # noqa: PLC0415 - dry_run imports the integrations' actions: only the worker needs them

    claimed = TestRun.objects.filter(pk=test_id, status=TestRunStatus.QUEUED).update(status=TestRunStatus.RUNNING)
    if not claimed:
        return
    test = TestRun.objects.select_related("workflow").get(pk=test_id)
    request = test.request
    workflow = test.workflow or Workflow(organization_id=test.organization_id, name=UNSAVED_WORKFLOW_NAME)
    try:
        result = dry_run.dry_run(
            workflow=workflow,
            payload=request.get("payload"),
            steps=request.get("steps"),
            send_step=request.get("send_step"),
            on_failure=request.get("on_failure"),
        )
        status = TestRunStatus.DONE
    except WorkflowInvalid as exc:
        result = {"outcome": "error", "detail": "The steps are not valid.", "errors": exc.errors, "steps": []}
        status = TestRunStatus.FAILED
    except Exception as exc:  # noqa: BLE001 - the user sees the failure; the log keeps the trace
        logger.exception("test run %s failed", test_id)
        result = {"outcome": "error", "detail": f"The test run failed: {type(exc).__name__}.", "steps": []}
        status = TestRunStatus.FAILED
    TestRun.objects.filter(pk=test_id).update(status=status, result=result, finished_at=timezone.now())


# -- flow control: resuming waits (issue 19) ---------------------------------------
def run_resume_webhook(*, token: str, body: Any) -> StepRun:
    """A POST to a wait's resume URL; ``flow.FlowError`` (404 unknown, 409 duplicate) otherwise."""
    try:
        storable.ensure(body, path="body")
    except storable.NotStorable as exc:
        raise flow.FlowError(f"{exc}.", 400) from None
    return flow.resume_webhook(token, body)


def run_approve(*, run: Run, step: str, approved: bool, user: User) -> StepRun:
    """An editor gives or refuses a waiting approval (the caller checked the role)."""
    return flow.approve(run, step, approved, user)
