"""Test a workflow with sample data, without sending anything (unless asked, one step at a time).

``dry_run`` walks the steps in order with the template context a real run
would have (``trigger`` from the sample payload, ``steps.<key>.output`` from
earlier steps): every config is rendered, actions without side effects
(``transform``, ``filter``) run for real, and for the others it says what
*would* be sent: each action's own ``preview`` of its rendered config (secrets
masked), which the builder renders without knowing the action.
``send_step="<key>"`` sends that one step for real (its output, scrubbed of the
credential's secrets, feeds the steps after it).

A previewed step has no output; when a later step needs one, the output of
that step's last successful run is used (said in ``output_source``), else
the later step reports the missing value. Nothing is written to the database.
"""

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from integrations.base import PREVIEW_MASK, ActionContext
from integrations.errors import PermanentError, RetryableError, RunFiltered
from integrations.http import transport
from integrations.http.action import url_problem, with_query
from integrations.registry import UnknownAction, get_action
from integrations.services import StepCredential, credential_for_step

from . import templating
from .execution.recording import Scrubber
from .files.services import RunFileAccess
from .flow import tree
from .models import STEP_SPEC_FIELDS, Step, StepRun, StepRunStatus, Workflow
from .validation import validate_definition

MASK = PREVIEW_MASK  # what previews show in place of a secret (each action's ``preview``)

__all__ = ["dry_run", "last_outputs", "sample_payload"]


def sample_payload(body: Any, *, method: str | None = "POST") -> dict[str, Any]:
    """A trigger shaped like a webhook's, with ``body`` as its body."""
    return {"method": method, "headers": {}, "query": {}, "content_type": "application/json", "body": body}


def last_outputs(workflow: Workflow) -> dict[str, Any]:
    """``{step key: output}`` of each step's latest successful execution in this workflow's runs."""
    outputs: dict[str, Any] = {}
    rows = (
        StepRun.objects.filter(run__workflow=workflow, status=StepRunStatus.SUCCEEDED)
        .order_by("key", "-run__created_at")
        .distinct("key")
        .values_list("key", "output")
        if _supports_distinct_on()
        else StepRun.objects.filter(run__workflow=workflow, status=StepRunStatus.SUCCEEDED)
        .order_by("-run__created_at")
        .values_list("key", "output")[:500]
    )
    for key, output in rows:
        outputs.setdefault(key, output)
    return outputs


def _supports_distinct_on() -> bool:
    return connection.features.can_distinct_on_fields


# Items of a loop a test runs (the others are counted, not run): a test stays quick and bounded.
LOOP_ITEMS_TESTED = 3


def dry_run(
    *,
    workflow: Workflow,
    payload: Any,
    steps: Sequence[Mapping[str, Any]] | None = None,
    send_step: str | None = None,
    on_failure: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Test ``workflow`` (or the unsaved ``steps`` for it) against ``payload`` (the trigger body).

    Raises ``WorkflowInvalid`` when ``steps`` do not validate (as saving would).
    Returns ``{"trigger": ..., "steps": [result, ...], "outcome": "...", "sent": key or None}``.

    Flow control is followed in process: a branch takes the path(s) its conditions choose
    (the others' steps are listed as skipped), a loop runs its first ``LOOP_ITEMS_TESTED``
    items (each result's ``path`` says which: ``rows[0]/append``), a delay or a wait is
    previewed (an approval is assumed given), ``stop`` ends the test as the run would end,
    and a test that fails runs the error path (``on_failure``: the saved one, or the unsaved one
    given) with the failure context.
    Each result's ``path`` names the instance (``route/vip/notify``).
    """
    if on_failure is not None:  # an unsaved error path (validated with the steps)
        workflow.on_failure = list(on_failure)
        if steps is None:
            steps = step_specs(workflow)
    rows: list[Step] = (
        validate_definition(workflow, steps) if steps is not None else list(workflow.steps.order_by("position"))
    )
    trigger = sample_payload(payload)
    context: dict[str, Any] = {
        "trigger": trigger,
        "steps": {},
        "run": {"id": "test", "trigger": "test", "created_at": timezone.now().isoformat(), "started_at": None},
        "workflow": {"id": workflow.pk, "name": workflow.name, "version": workflow.version},
    }
    test = _Test(workflow, send_step, last_outputs(workflow) if workflow.pk else {})
    test.run_list(rows, context, prefix="")
    if test.outcome == "error" and test.failure and workflow.on_failure:
        failure_context = {**context, "steps": dict(context["steps"]), "failure": test.failure}
        test.outcome, test.stopped = "error", False
        test.run_list([_row(spec) for spec in workflow.on_failure], failure_context, prefix="on_failure/")
        test.outcome = "error"
    return {"trigger": trigger, "steps": test.results, "outcome": test.outcome, "sent": send_step}


def _row(spec: Mapping[str, Any]) -> Step:
    """An unsaved ``Step`` for a nested (or error-path) spec, as validation normalized it."""
    policy = {
        f: spec[f] for f in ("max_retries", "backoff_seconds", "backoff_max_seconds", "timeout_seconds") if f in spec
    }
    return Step(
        key=spec.get("key", ""),
        action_type=spec.get("action_type", ""),
        config=spec.get("config") or {},
        credential_id=spec.get("credential"),
        on_in_doubt=spec.get("on_in_doubt") or "",
        continue_on_error=bool(spec.get("continue_on_error")),
        **policy,
    )


class _Test:
    """One test's walk over the tree: its results, how it ended, and the failure it met."""

    def __init__(self, workflow: Workflow, send_step: str | None, earlier: dict[str, Any]) -> None:
        self.workflow = workflow
        self.send_step = send_step
        self.earlier = earlier
        self.results: list[dict[str, Any]] = []
        self.outcome = "completed"
        self.stopped = False
        self.failure: dict[str, Any] | None = None

    def result(self, position: int, row: Step, path: str) -> dict[str, Any]:
        result: dict[str, Any] = {
            "position": position,
            "key": row.key,
            "path": path,
            "action_type": row.action_type,
            "status": "skipped",
            "rendered_config": None,
            "output": None,
            "output_source": None,
            "would_send": None,
            "error": "",
        }
        self.results.append(result)
        return result

    def skip_list(self, specs: Sequence[Any], prefix: str) -> None:
        """List the steps of a path not taken (or the rest of a stopped run) as skipped."""
        for position, spec in enumerate(specs):
            if isinstance(spec, Mapping):
                row = _row(spec)
                self.result(position, row, prefix + row.key)
                self._skip_nested(row, prefix + row.key)

    def _skip_nested(self, row: Step, path: str) -> None:
        # Named as the engine names instances (``tree.scope_of_path``): a nested list keeps the scope
        # of the step that holds it; a loop that did not run has no iteration to name.
        for slot in tree.slots({"action_type": row.action_type, "config": row.config}):
            self.skip_list(slot.steps, tree.scope_of_path(path, row.key))

    def run_list(self, rows: Sequence[Step], context: dict[str, Any], *, prefix: str) -> Any:
        """Test a list of steps in order; returns the output of its last step that ran."""
        last: Any = None
        for position, row in enumerate(rows):
            path = prefix + row.key
            result = self.result(position, row, path)
            if self.stopped:
                self._skip_nested(row, path)
                continue
            try:
                if get_action_or_none(row.action_type) is not None and get_action(row.action_type).control:
                    self._control(row, position, context, result, path)
                else:
                    _test_step(row, position, context, result, send=(row.key == self.send_step), workflow=self.workflow)
            except RunFiltered as filtered:
                result.update(status="filtered", output=filtered.output)
                self.outcome, self.stopped = "filtered", True
                continue
            except (PermanentError, RetryableError) as exc:
                result.update(status="error", error=exc.message)
                if row.continue_on_error:
                    context["steps"][row.key] = {"output": None, "status": StepRunStatus.FAILED, "error": exc.message}
                    continue
                self.outcome, self.stopped = "error", True
                self.failure = self.failure or {"step": row.key, "error": exc.message, "attempts": 1}
                continue
            if result["output"] is None and result["status"] == "preview" and row.key in self.earlier:
                result.update(output=self.earlier[row.key], output_source="last successful run")
            if result["output"] is not None or result["status"] in ("ok", "sent"):
                context["steps"][row.key] = {"output": result["output"], "status": StepRunStatus.SUCCEEDED}
            last = result["output"]
        return last

    def _control(self, row: Step, position: int, context: dict[str, Any], result: dict[str, Any], path: str) -> None:
        action: Any = get_action(row.action_type)
        try:
            rendered = templating.render_value(templating.prepare_config(action, row.config or {}), context)
        except templating.TemplateError as exc:
            raise PermanentError(f"template error: {exc.message}") from None
        result["rendered_config"] = rendered
        preview = action.preview(rendered)
        scope = tree.scope_of_path(path, row.key)  # a branch's paths keep its scope, as in the engine
        if row.action_type == "branch":
            taken = action.choose(rendered)
            result.update(status="ok", output=preview)
            for slot in tree.slots({"action_type": row.action_type, "config": row.config}):
                if slot.name in taken and not self.stopped:
                    self.run_list([_row(s) for s in slot.steps if isinstance(s, Mapping)], context, prefix=scope)
                else:
                    self.skip_list(slot.steps, scope)
        elif row.action_type == "for_each":
            items = action.items_of(rendered)
            body = [_row(s) for s in (row.config or {}).get("steps") or [] if isinstance(s, Mapping)]
            outputs: list[Any] = []
            for index, item in enumerate(items[:LOOP_ITEMS_TESTED]):
                if self.stopped:
                    break
                item_context = {**context, "steps": dict(context["steps"]), "item": item, "index": index}
                before = self.outcome
                outputs.append(self.run_list(body, item_context, prefix=tree.iteration_scope(path, index)))
                if self.stopped and self.outcome == "error" and rendered.get("on_item_failure") == "continue":
                    self.stopped, self.outcome = False, before  # the loop goes on with the next item
            result.update(
                status="ok",
                output=outputs,
                would_send={**preview, "tested_items": min(len(items), LOOP_ITEMS_TESTED)},
            )
        elif row.action_type == "delay":
            if "error" in preview:
                raise PermanentError(str(preview["error"]))
            result.update(status="preview", would_send=preview, output={})
        elif row.action_type == "wait":
            result.update(status="preview", would_send=preview)
            if rendered.get("kind") == "approval" and row.key not in self.earlier:
                assumed = {"approved": True, "by": "(test)", "at": timezone.now().isoformat()}
                result.update(output=assumed, output_source="assumed approved (test)")
        elif row.action_type == "stop":
            status, message = action.outcome(rendered)
            output = {"status": status, "message": message}
            self.stopped = True
            if status == "failed":
                result.update(status="error", error=message or "stopped as failed", output=output)
                self.outcome = "error"
                self.failure = self.failure or {"step": row.key, "error": message, "attempts": 1}
            else:
                result.update(status="filtered" if status == "filtered" else "ok", output=output)
                self.outcome = "filtered" if status == "filtered" else "completed"


def get_action_or_none(name: str) -> Any:
    try:
        return get_action(name)
    except UnknownAction:
        return None


def _test_step(
    row: Step, position: int, context: dict[str, Any], result: dict[str, Any], *, send: bool, workflow: Workflow
) -> None:
    try:
        action = get_action(row.action_type)
    except UnknownAction as exc:
        raise PermanentError(str(exc)) from None
    config = templating.prepare_config(action, row.config or {})
    try:
        rendered = templating.render_value(config, context)
    except templating.TemplateError as exc:
        raise PermanentError(f"template error: {exc.message}") from None
    result["rendered_config"] = rendered
    credential = row.credential if row.credential_id else None
    opened: StepCredential | None = None
    if credential is not None and (send or not action.has_side_effects):
        opened = credential_for_step(credential, timeout=row.timeout_seconds)
    scrub = Scrubber(tuple(opened.secret_values()) if opened else ())
    if action.has_side_effects and not send:
        result["status"] = "preview"
        result["would_send"] = action.preview(rendered, credential)
        refusal = _refused_destination(row.action_type, rendered)
        if refusal:
            raise PermanentError(refusal)  # the real run would fail here, with this very message
        return
    ctx = ActionContext(
        run_id=f"test-{uuid.uuid4()}",
        workflow_id=workflow.pk or 0,
        organization_id=workflow.organization_id,
        step_key=row.key,
        idempotency_key=f"potaflow-test-{uuid.uuid4()}-{position}",
        # A test holds a worker slot: its send is bounded by POTAFLOW_TEST_RUN_TIMEOUT_SECONDS too.
        timeout_seconds=min(row.timeout_seconds, settings.POTAFLOW_TEST_RUN_TIMEOUT_SECONDS),
        credential=opened.fields if opened else None,
        credential_kind=credential.kind if credential is not None else None,
        template_context=context,
        raw_config=row.config or {},
        files=RunFileAccess(organization_id=workflow.organization_id),  # a test run's files are detached: pruned
        connection=opened.connection if opened else None,
    )
    if send and action.has_side_effects:
        result["would_send"] = action.preview(rendered, credential)
    try:
        try:
            output = action.run(rendered, ctx)
        finally:
            if opened is not None and opened.connection is not None:  # tokens a refresh brought in
                scrub = Scrubber(tuple(opened.secret_values()))
    except RunFiltered as filtered:
        raise RunFiltered(scrub(filtered.output)) from None
    except (PermanentError, RetryableError) as exc:
        raise type(exc)(scrub(exc.message)) from None
    result["output"] = json.loads(json.dumps(scrub(output), default=str))
    result["status"] = "sent" if action.has_side_effects else "ok"


def _refused_destination(action_type: str, config: Any) -> str | None:
    """The guard's refusal of an HTTP step's destination (a loopback or private address), as the run says it."""
    if action_type != "http.request" or not isinstance(config, dict) or url_problem(str(config.get("url", ""))):
        return None
    return transport.destination_refusal(with_query(str(config["url"]), config.get("query") or {}))


def step_specs(workflow: Workflow) -> list[dict[str, Any]]:
    """The saved steps as specs (what ``dry_run(steps=...)`` and the services take)."""
    return [
        {**{f: getattr(s, f) for f in STEP_SPEC_FIELDS}, "credential": s.credential_id}
        for s in workflow.steps.order_by("position")
    ]
