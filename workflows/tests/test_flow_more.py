"""Flow control leftovers (issue 19) with the real worker, broker and database: a filter inside a
branch path or a loop iteration, replay from a failed step instance, waiting runs in metrics and status."""

import pytest

from testing.worker import wait_for_run
from workflows.models import StepIteration, StepRun
from workflows.services import start_manual_run, workflow_create
from workflows.tests.test_flow_run import celery_worker_env, http, instances, org, stack, t  # noqa: F401

pytestmark = pytest.mark.slow

OPEN = {"pending", "running", "retrying", "waiting"}


def keep_positive(key="keep"):
    return {"key": key, "action_type": "filter", "config": {"condition": "{{ item > 0 }}"}}


# -- a filter inside a branch path or a loop iteration -----------------------------------------
def test_a_filter_inside_an_iteration_filters_that_item_only_and_the_loop_goes_on(stack, org):  # noqa: F811
    always = {"name": "always", "when": "true", "steps": [keep_positive(), t("ratio", {"r": "{{ 12 // item }}"})]}
    body = [
        t("pre", {"n": "{{ item }}"}),
        {"key": "check", "action_type": "branch", "config": {"paths": [always]}},
        t("post", {"n": "{{ item }}"}),
    ]
    workflow = workflow_create(
        organization=org,
        name="Filtered items",
        steps=[
            {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}},
            t("total", {"all": "{{ steps.lines.output }}"}),
        ],
    )
    run = start_manual_run(workflow=workflow, body={"items": [3, 0, 4]})
    run = wait_for_run(run.pk, {"succeeded", "filtered", "failed"}, timeout=30, worker=stack)
    rows = instances(run)
    assert run.status == "succeeded"
    assert rows["lines[1]/keep"].status == "filtered"
    assert rows["lines[1]/ratio"].status == "skipped"  # written with the filter (one segment), never run
    assert rows["lines[1]/check"].status == "filtered"  # the branch holding the filter is closed
    assert "lines[1]/post" not in rows  # the rest of the iteration did not run
    assert rows["lines[2]/post"].status == "succeeded"  # the next item ran
    loop = rows["lines"]
    assert loop.status == "succeeded" and loop.loop_finished == 3
    assert loop.output == [{"n": 3}, None, {"n": 4}]
    statuses = list(StepIteration.objects.filter(loop=loop).values_list("status", flat=True))
    assert statuses == ["succeeded", "filtered", "succeeded"]
    assert rows["total"].output == {"all": loop.output}
    assert not [path for path, row in rows.items() if row.status in OPEN]


def test_a_filter_inside_a_branch_path_ends_the_run_as_filtered_and_closes_every_container(stack, org):  # noqa: F811
    inner = {
        "key": "inner",
        "action_type": "branch",
        "config": {
            "paths": [
                {
                    "name": "deep",
                    "when": "true",
                    "steps": [
                        {"key": "gate", "action_type": "filter", "config": {"condition": "{{ trigger.body.go }}"}},
                        t("never", {"x": 1}),
                    ],
                }
            ]
        },
    }
    path_a = {"name": "a", "when": "true", "steps": [t("first", {"x": 1}), inner]}
    workflow = workflow_create(
        organization=org,
        name="Filtered path",
        steps=[{"key": "route", "action_type": "branch", "config": {"paths": [path_a]}}, t("after", {"x": 2})],
    )
    run = start_manual_run(workflow=workflow, body={"go": False})
    run = wait_for_run(run.pk, {"succeeded", "filtered", "failed"}, timeout=30, worker=stack)
    rows = instances(run)
    assert run.status == "filtered"
    assert rows["gate"].status == "filtered" and rows["never"].status == "skipped"
    assert rows["inner"].status == "filtered" and rows["route"].status == "filtered"
    assert rows["first"].status == "succeeded" and "after" not in rows
    assert not [path for path, row in rows.items() if row.status in OPEN]
    passed = wait_for_run(start_manual_run(workflow=workflow, body={"go": True}).pk, {"succeeded"}, worker=stack)
    assert StepRun.objects.get(run=passed, key="after").status == "succeeded"


def test_when_an_item_fails_the_run_its_iteration_is_failed_and_those_not_run_are_skipped(stack, org):  # noqa: F811
    body = [{"key": "ratio", "action_type": "transform", "max_retries": 0, "config": {"value": "{{ 10 // item }}"}}]
    workflow = workflow_create(
        organization=org,
        name="Stops",
        steps=[
            {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}}
        ],
    )
    run = wait_for_run(start_manual_run(workflow=workflow, body={"items": [1, 0, 5]}).pk, {"failed"}, worker=stack)
    iterations = StepIteration.objects.filter(loop__run=run).order_by("index")
    assert [(i.status, "division" in i.error) for i in iterations] == [
        ("succeeded", False),
        ("failed", True),
        ("skipped", False),
    ]
