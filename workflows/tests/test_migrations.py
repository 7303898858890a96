"""Data migrations, run forwards against rows written by the schema before them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from workflows.ops.insights_triggers import create_sqlite_triggers, drop_sqlite_triggers

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(target):
    # As `manage.py migrate` does through pre/post_migrate: Insights' SQLite triggers step out of the way
    # (a remade table failed "error in trigger ... no such table" on the embedded default).
    drop_sqlite_triggers()
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.fixture(autouse=True)
def _triggers_back():
    yield
    create_sqlite_triggers()  # the flush after the test and the next tests expect them


def test_existing_step_runs_become_one_attempt_each():
    old = migrate([("workflows", "0002_steprun_claim_token")])
    Organization = old.get_model("accounts", "Organization")
    Workflow = old.get_model("workflows", "Workflow")
    Run = old.get_model("workflows", "Run")
    StepRun = old.get_model("workflows", "StepRun")
    org = Organization.objects.create(name="Old", slug="old")
    wf = Workflow.objects.create(organization=org, name="W", webhook_token="t" * 43)
    run = Run.objects.create(workflow=wf, workflow_version=1, trigger="manual")
    start = timezone.now()
    StepRun.objects.create(
        run=run, position=0, key="a", action_type="transform", status="succeeded", attempts=3,
        started_at=start, finished_at=start, duration_ms=12,
    )  # fmt: skip
    StepRun.objects.create(
        run=run, position=1, key="b", action_type="http.request", status="failed", attempts=1,
        started_at=start, finished_at=start, duration_ms=5, error="HTTP 404",
    )  # fmt: skip
    StepRun.objects.create(run=run, position=2, key="c", action_type="transform", status="skipped", attempts=0)

    new = migrate([("workflows", "0003_step_attempts")])
    StepAttempt = new.get_model("workflows", "StepAttempt")
    rows = {a.step_run.key: a for a in StepAttempt.objects.select_related("step_run")}
    assert set(rows) == {"a", "b"}
    assert (rows["a"].number, rows["a"].outcome, rows["a"].duration_ms) == (3, "succeeded", 12)
    assert (rows["b"].number, rows["b"].outcome, rows["b"].error) == (1, "permanent_error", "HTTP 404")
    migrate(new_leaf())


def new_leaf():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def test_existing_runs_get_one_version_per_distinct_workflow_version():
    old = migrate([("workflows", "0005_metric_baseline")])
    Organization = old.get_model("accounts", "Organization")
    Workflow = old.get_model("workflows", "Workflow")
    Run = old.get_model("workflows", "Run")
    org = Organization.objects.create(name="Old", slug="old")
    wf = Workflow.objects.create(organization=org, name="W", webhook_token="v" * 43, version=2)
    other = Workflow.objects.create(organization=org, name="X", webhook_token="x" * 43)
    v1 = {"workflow": {"id": wf.pk, "name": "W", "version": 1}, "steps": [{"position": 0, "key": "a"}]}
    v2 = {"workflow": {"id": wf.pk, "name": "W", "version": 2}, "steps": [{"position": 0, "key": "b"}]}
    early = timezone.now() - timezone.timedelta(days=2)
    runs = [
        Run.objects.create(workflow=wf, workflow_version=1, definition=v1, trigger="manual", created_at=early),
        Run.objects.create(workflow=wf, workflow_version=1, definition=v1, trigger="manual"),
        Run.objects.create(workflow=wf, workflow_version=2, definition=v2, trigger="manual"),
        Run.objects.create(workflow=other, workflow_version=1, definition={}, trigger="manual"),
    ]

    new = migrate([("workflows", "0008_drop_run_definition")])
    Run = new.get_model("workflows", "Run")
    WorkflowVersion = new.get_model("workflows", "WorkflowVersion")
    versions = {(v.workflow_id, v.number): v for v in WorkflowVersion.objects.all()}
    assert set(versions) == {(wf.pk, 1), (wf.pk, 2), (other.pk, 1)}
    assert versions[(wf.pk, 1)].definition == v1 and versions[(wf.pk, 2)].definition == v2
    assert versions[(wf.pk, 1)].created_at == early
    assert [Run.objects.get(pk=r.pk).version_id for r in runs] == [
        versions[(wf.pk, 1)].pk, versions[(wf.pk, 1)].pk, versions[(wf.pk, 2)].pk, versions[(other.pk, 1)].pk,
    ]  # fmt: skip

    back = migrate([("workflows", "0006_workflow_versions")])
    assert back.get_model("workflows", "Run").objects.get(pk=runs[2].pk).definition == v2
    migrate(new_leaf())
