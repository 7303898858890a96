"""What a loop's bookkeeping costs the database, and that it cannot be planned badly (PostgreSQL).

In-process (``engine.run_step``, what the Celery task calls), counting this thread's statements;
the loop's body calls a local HTTP server, so each iteration is a message of its own.
"""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from testing.network import Reply
from workflows.execution import engine, flow
from workflows.models import Run, StepIteration, StepRun, StepRunStatus
from workflows.services import run_accept, workflow_create

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement fan-in is PostgreSQL's"),
]


def loop_workflow(org, url, *, parallel=1, body=None):
    post = {
        "key": "post",
        "action_type": "http.request",
        "config": {"method": "POST", "url": url, "body": {"i": "{{ index }}", "n": "{{ item }}"}},
    }
    return workflow_create(
        organization=org,
        name="Loop",
        steps=[{"key": "lines", "action_type": "for_each",
                "config": {"items": "{{ trigger.items }}", "parallel": parallel, "steps": body or [post]}}],
    )  # fmt: skip


def drive(run) -> list[list[str]]:
    """Execute the run's messages here until it is final: each pending instance in position order.
    Returns the statements of each message."""
    messages = []
    for _ in range(50):
        run.refresh_from_db(fields=["status"])
        if run.is_finished:
            return messages
        position = (
            StepRun.objects.filter(run=run, status=StepRunStatus.PENDING)
            .order_by("position")
            .values_list("position", flat=True)
            .first()
        )
        assert position is not None, f"run {run.status} with nothing pending"
        with CaptureQueriesContext(connection) as captured:
            engine.run_step(run.pk, position, message_id=f"m-{len(messages)}")
        messages.append([q["sql"] for q in captured.captured_queries])
    raise AssertionError("the run did not finish in 50 messages")


def test_an_iterations_end_is_counted_and_the_next_started_in_one_statement(org, single_tenant, http_server):
    http_server.route("POST", "/line", Reply(200, {"ok": True}))
    wf = loop_workflow(org, http_server.url + "/line")
    warm, _ = run_accept(workflow=wf, trigger="manual", payload={"items": [1]})
    drive(warm)  # this process reads the version once

    run, _ = run_accept(workflow=wf, trigger="manual", payload={"items": [10, 20, 30]})
    messages = drive(run)
    assert Run.objects.get(pk=run.pk).status == "succeeded"
    loop = StepRun.objects.get(run=run, key="lines")
    assert (loop.loop_total, loop.loop_started, loop.loop_finished) == (3, 3, 3)
    assert [o["body"] for o in loop.output] == [{"ok": True}] * 3
    sent = [json.loads(r.body) for r in http_server.requests[-3:]]
    assert sent == [{"i": 0, "n": 10}, {"i": 1, "n": 20}, {"i": 2, "n": 30}]
    # Each iteration's message: one statement writes the iterations' rows and the loop's counts
    # (this one done, the next started); before, five statements and a read did.
    for statements in messages[1:]:
        writes = [sql for sql in statements if sql.lstrip().startswith(("UPDATE", "WITH done"))]
        on_iterations = [
            sql
            for sql in statements
            if "workflows_stepiteration" in sql and "UPDATE" in sql and "'skipped'" not in sql  # the run's end
        ]
        assert len(on_iterations) == 1, on_iterations
        assert on_iterations[0].lstrip().startswith("WITH done AS (\n    UPDATE workflows_stepiteration")
        assert not [sql for sql in writes if "loop_finished" in sql and "workflows_stepiteration" not in sql]


def test_an_iteration_is_counted_once(org, single_tenant, http_server):
    http_server.route("POST", "/line", Reply(200, {"ok": True}))
    wf = loop_workflow(org, http_server.url + "/line", parallel=2)
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"items": [1, 2, 3]})
    engine.run_step(run.pk, 0, message_id="loop")  # the loop decides: iterations 0 and 1 start
    loop = StepRun.objects.get(run=run, key="lines")
    assert (loop.loop_started, loop.loop_finished) == (2, 0)
    assert list(StepIteration.objects.filter(loop=loop).order_by("index").values_list("status", flat=True)) == [
        "running",
        "running",
        "pending",
    ]
    locked = Run.objects.select_related("version").get(pk=run.pk)
    for _ in range(2):  # a redelivered message ends iteration 0 again: counted once, one next item taken
        flow._iteration_done(locked, loop, 0, StepRunStatus.SUCCEEDED, {"n": 1})
    loop.refresh_from_db()
    assert (loop.loop_started, loop.loop_finished, loop.status) == (3, 1, "waiting")
    assert list(StepIteration.objects.filter(loop=loop).order_by("index").values_list("status", flat=True)) == [
        "succeeded",
        "running",
        "running",
    ]
    assert StepIteration.objects.get(loop=loop, index=0).output == {"n": 1}
    assert StepRun.objects.filter(run=run, path="lines[2]/post", status="pending").exists()


def test_statements_on_iterations_go_by_the_loops_id_never_through_a_join(org, single_tenant, http_server):
    """Joined to the step runs, the planner with stale statistics (a freshly loaded table, before
    autovacuum's ANALYZE) read every iteration of the table once per row: the UPDATE that skips a
    finished run's open iterations ran 15 s at 5,000 iterations, and the item lookup grew with
    the table. By the loop's id they are answered by the (loop, index) unique index."""
    http_server.route("POST", "/line", Reply(200, {"ok": True}))
    body = [
        {"key": "post", "action_type": "http.request", "config": {"method": "POST", "url": http_server.url + "/line",
                                                                 "body": {"n": "{{ item }}"}}},
        {"key": "halt", "action_type": "stop", "config": {"status": "succeeded", "message": "enough"}},
    ]  # fmt: skip
    run, _ = run_accept(workflow=loop_workflow(org, "", parallel=1, body=body), trigger="manual",
                        payload={"items": [1, 2, 3]})  # fmt: skip
    statements = [sql for message in drive(run) for sql in message]
    assert Run.objects.get(pk=run.pk).status == "succeeded"
    statuses = list(StepIteration.objects.filter(loop__run=run).order_by("index").values_list("status", flat=True))
    assert statuses[1:] == ["skipped", "skipped"]
    on_iterations = [sql for sql in statements if "workflows_stepiteration" in sql]
    assert any("SET \"status\" = 'skipped'" in sql for sql in on_iterations)  # the stop skipped the rest
    assert any(sql.startswith("SELECT") and "item" in sql for sql in on_iterations)  # the item was read
    joined = [sql for sql in on_iterations if "JOIN" in sql.upper()]
    assert joined == []


def test_a_control_step_reads_earlier_outputs_only_if_its_own_expressions_name_them(org, single_tenant):
    """A branch's nested lists hold the word ``steps``: its own ``when`` decides whether the
    instances' outputs are read (a branch after a loop of 1,000 items read them all for nothing)."""
    tag = {"key": "tag", "action_type": "transform", "config": {"value": {"n": "{{ trigger.n }}"}}}
    wf = workflow_create(
        organization=org,
        name="Branch",
        steps=[
            tag,
            {"key": "route", "action_type": "branch", "config": {
                "paths": [{"name": "big", "when": "{{ trigger.n > 5 }}", "steps": [
                    {"key": "big", "action_type": "transform", "config": {"value": 1}}]}],
                "otherwise": [{"key": "small", "action_type": "transform", "config": {"value": 2}}]}},
            {"key": "again", "action_type": "branch", "config": {
                "paths": [{"name": "tagged", "when": "{{ steps.tag.output.n > 5 }}", "steps": [
                    {"key": "yes", "action_type": "transform", "config": {"value": 3}}]}]}},
        ],
    )  # fmt: skip
    run, _ = run_accept(workflow=wf, trigger="manual", payload={"n": 7})
    messages = drive(run)
    assert Run.objects.get(pk=run.pk).status == "succeeded"
    rows = {r.path or r.key: r for r in StepRun.objects.filter(run=run)}
    assert rows["route"].output == {"taken": ["big"]} and rows["again"].output == {"taken": ["tagged"]}
    assert rows["yes"].status == "succeeded"
    statements = [sql for message in messages for sql in message]
    reads = [sql for sql in statements if sql.startswith("SELECT") and '"workflows_steprun"."output"' in sql]
    # One read of the outputs: the second branch's, whose condition names steps.tag.
    assert len(reads) == 1, reads
