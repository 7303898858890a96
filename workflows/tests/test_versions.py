"""Each workflow version is stored once and every run points at the one it was accepted with."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workflows import services
from workflows.execution import engine
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, WorkflowVersion
from workflows.services import run_accept, run_replay, workflow_create, workflow_update

pytestmark = pytest.mark.django_db


def steps(n=2, filler=""):
    return [
        {"key": f"s{i}", "action_type": "transform", "config": {"value": {"i": i, "filler": filler}}} for i in range(n)
    ]


def test_create_update_and_rotate_each_record_one_version(org):
    wf = workflow_create(organization=org, name="W", steps=steps())
    assert list(wf.versions.values_list("number", flat=True)) == [1]
    workflow_update(workflow=wf, name="W")  # nothing changed: no new version
    workflow_update(workflow=wf, steps=steps(3))
    services.workflow_rotate_webhook_token(workflow=wf)
    assert list(wf.versions.order_by("number").values_list("number", flat=True)) == [1, 2, 3]
    v2 = wf.versions.get(number=2).definition
    assert [s["key"] for s in v2["steps"]] == ["s0", "s1", "s2"] and v2["workflow"]["version"] == 2
    assert v2 == services.workflow_definition(wf) | {"workflow": {**v2["workflow"], "version": 2}}


def test_runs_share_one_stored_definition_however_big(org):
    wf = workflow_create(organization=org, name="Big", steps=steps(2, filler="x" * 200_000))
    runs = [run_accept(workflow=wf, trigger="manual", payload={"body": i})[0] for i in range(10)]
    assert WorkflowVersion.objects.filter(workflow=wf).count() == 1
    assert {r.version_id for r in runs} == {wf.versions.get().pk}
    assert "definition" not in {f.name for f in Run._meta.concrete_fields}
    assert Run.objects.get(pk=runs[0].pk).definition["steps"][0]["config"]["value"]["filler"] == "x" * 200_000


def test_a_run_and_its_replay_execute_the_version_it_was_accepted_with(org):
    wf = workflow_create(organization=org, name="W", steps=steps(2))
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    workflow_update(workflow=wf, steps=steps(1))
    later, _ = run_accept(workflow=wf, trigger="manual", payload={})
    run = Run.objects.get(pk=run.pk)
    assert (run.workflow_version, len(run.definition["steps"])) == (1, 2)
    assert (later.workflow_version, len(later.definition["steps"])) == (2, 1)
    StepRun.objects.filter(run=run).update(status=StepRunStatus.FAILED)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    replay = run_replay(run=Run.objects.get(pk=run.pk))
    assert replay.version_id == run.version_id and replay.workflow_version == 1
    assert replay.step_runs.count() == 2


def test_run_accept_creates_a_missing_current_version_once(org):
    wf = workflow_create(organization=org, name="W", steps=steps(1))
    wf.versions.all().delete()  # as for a workflow saved before versions were stored
    first, _ = run_accept(workflow=wf, trigger="manual", payload={})
    second, _ = run_accept(workflow=wf, trigger="manual", payload={})
    assert first.version_id == second.version_id == wf.versions.get(number=1).pk


def test_executing_a_step_reads_the_definition_in_its_claim_query(org, settings):
    """The engine reads run.definition per step: it must come with the claim, not cost a query."""
    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = 0
    wf = workflow_create(organization=org, name="W", steps=steps(1))
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    with CaptureQueriesContext(connection) as queries:
        outcome = engine.run_step(run.pk, 0, message_id="m-1")
    assert outcome.proceed is False and Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    version_reads = [q["sql"] for q in queries.captured_queries if "workflows_workflowversion" in q["sql"]]
    assert len(version_reads) == 1, version_reads
    assert "workflows_steprun" in version_reads[0] and "JOIN" in version_reads[0]
