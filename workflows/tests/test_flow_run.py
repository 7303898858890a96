"""Flow control at run time (issue 19) with the real worker, broker and database: branches, loops,
durable delays and waits, approvals, the error path, idempotency keys per instance."""

import time
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Organization, Role, User
from testing.network import RecordingHTTPServer, Reply, worker_network_guard_env
from testing.worker import start_beat, wait_for, wait_for_run
from workflows.models import Run, StepIteration, StepRun
from workflows.services import start_manual_run, workflow_create
from workflows.tests.handlers import calls

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http():
    server = RecordingHTTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def celery_worker_env(http):
    env = worker_network_guard_env()
    env.update({"POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1", "POTAFLOW_ORG_MAX_RUNNING_STEPS": "0"})
    return env


@pytest.fixture
def org(transactional_db):
    return Organization.objects.create(name="Flow", slug="flow")


@pytest.fixture
def stack(celery_worker, http, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    http.reset()
    return celery_worker


def t(key, value):
    return {"key": key, "action_type": "transform", "config": {"value": value}}


def instances(run) -> dict[str, StepRun]:
    return {r.path or r.key: r for r in StepRun.objects.filter(run=run)}


def route_workflow(org, mode="first"):
    return workflow_create(
        organization=org,
        name=f"Route {mode}",
        steps=[
            {
                "key": "route",
                "action_type": "branch",
                "config": {
                    "mode": mode,
                    "paths": [
                        {"name": "vip", "when": "{{ trigger.body.vip }}", "steps": [t("to_vip", {"p": "vip"})]},
                        {
                            "name": "big",
                            "when": "{{ trigger.body.amount > 100 }}",
                            "steps": [t("to_big", {"p": "big"})],
                        },
                    ],
                    "otherwise": [t("to_support", {"p": "support"})],
                },
            },
            t("after", {"route": "{{ steps.route.output.taken }}"}),
        ],
    )


# -- branch ----------------------------------------------------------------------------
def test_each_path_of_a_branch_is_taken_by_its_payload_and_the_run_goes_on_after_it(stack, org):
    workflow = route_workflow(org)
    cases = [
        ({"vip": True, "amount": 500}, ["vip"], "to_vip"),
        ({"vip": False, "amount": 500}, ["big"], "to_big"),
        ({"vip": False, "amount": 5}, ["otherwise"], "to_support"),
        # Fields the event lacks: false by the filter's condition rule, not a failed run.
        ({"note": "no vip, no amount"}, ["otherwise"], "to_support"),
    ]
    runs = [(start_manual_run(workflow=workflow, body=body), taken, key) for body, taken, key in cases]
    for run, taken, key in runs:
        wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
        rows = instances(run)
        assert rows["route"].status == "succeeded" and rows["route"].output == {"taken": taken}
        assert rows[key].status == "succeeded" and rows[key].parent_id == rows["route"].pk
        assert set(rows) == {"route", key, "after"}  # the paths not taken wrote nothing
        assert rows["after"].output == {"route": taken}


def test_every_match_mode_runs_each_matching_path_in_order(stack, org):
    workflow = route_workflow(org, mode="all")
    run = start_manual_run(workflow=workflow, body={"vip": True, "amount": 500})
    wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    rows = instances(run)
    assert rows["route"].output == {"taken": ["vip", "big"]}
    assert rows["to_vip"].position < rows["to_big"].position < rows["after"].position
    assert "to_support" not in rows


# -- for_each ----------------------------------------------------------------------------
def loop_workflow(org, *, items="{{ trigger.body.items }}", body=None, after=True, **config):
    steps = [
        {
            "key": "lines",
            "action_type": "for_each",
            "config": {
                "items": items,
                "steps": body or [t("double", {"n": "{{ item * 2 }}", "i": "{{ index }}"})],
                **config,
            },
        }
    ]
    if after:
        steps.append(t("total", {"all": "{{ steps.lines.output }}"}))
    return workflow_create(organization=org, name="Loop", steps=steps)


def test_three_items_run_one_after_the_other_and_the_loop_output_is_read_after_it(stack, org):
    run = start_manual_run(workflow=loop_workflow(org), body={"items": [1, 2, 3]})
    wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    rows = instances(run)
    doubles = [rows[f"lines[{i}]/double"] for i in range(3)]
    assert [r.output for r in doubles] == [{"n": 2, "i": 0}, {"n": 4, "i": 1}, {"n": 6, "i": 2}]
    # Sequential: each iteration started after the one before finished.
    assert doubles[0].finished_at <= doubles[1].started_at and doubles[1].finished_at <= doubles[2].started_at
    loop = rows["lines"]
    assert (loop.status, loop.loop_total, loop.loop_finished) == ("succeeded", 3, 3)
    assert loop.output == [{"n": 2, "i": 0}, {"n": 4, "i": 1}, {"n": 6, "i": 2}]
    assert rows["total"].output == {"all": loop.output}
    assert list(StepIteration.objects.filter(loop=loop).values_list("index", "status")) == [
        (i, "succeeded") for i in range(3)
    ]


def test_twenty_items_four_at_a_time(stack, org, settings):
    body = [t("slow", {"n": "{{ item }}", "at": "{{ run.id }}"})]
    run = start_manual_run(workflow=loop_workflow(org, body=body, parallel=4), body={"items": list(range(20))})
    wait_for_run(run.pk, {"succeeded"}, timeout=60, worker=stack)
    rows = instances(run)
    loop = rows["lines"]
    assert (loop.loop_total, loop.loop_finished, loop.loop_started) == (20, 20, 20)
    assert [o["n"] for o in loop.output] == list(range(20))
    assert len([p for p in rows if p.startswith("lines[")]) == 20


def test_an_item_that_fails_then_succeeds_on_retry_and_the_idempotency_keys(stack, org, http, tmp_path):
    log = tmp_path / "calls.jsonl"
    body = [
        {"key": "flaky", "action_type": "custom", "backoff_seconds": 0.2, "backoff_max_seconds": 0.3,
         "config": {"handler": "test.flaky", "input": {"log": str(log), "fail_times": 1}}},
        {"key": "post", "action_type": "http.request", "config": {"method": "POST", "url": http.url + "/x",
                                                                 "body": {"i": "{{ index }}"}}},
    ]  # fmt: skip
    http.route("POST", "/x", Reply(200, {"ok": True}))
    run = start_manual_run(workflow=loop_workflow(org, body=body, after=False), body={"items": ["a", "b"]})
    wait_for_run(run.pk, {"succeeded"}, timeout=60, worker=stack)
    rows = instances(run)
    assert rows["lines[0]/flaky"].attempts == 2  # the first call failed, the retry succeeded
    assert rows["lines[1]/flaky"].attempts == 1
    assert len(calls(log)) == 3
    keys = [r.headers.get("idempotency-key") for r in http.requests]
    assert keys == [f"potaflow-{run.pk}-lines[0]/post", f"potaflow-{run.pk}-lines[1]/post"]


def test_on_item_failure_continue_records_the_failed_item_and_goes_on(stack, org):
    body = [
        {"key": "ratio", "action_type": "transform", "max_retries": 0, "config": {"value": {"per": "{{ 10 // item }}"}}}
    ]
    run = start_manual_run(
        workflow=loop_workflow(org, body=body, on_item_failure="continue"), body={"items": [1, 0, 5]}
    )
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=30, worker=stack)
    assert run.status == "succeeded"
    rows = instances(run)
    assert rows["lines[1]/ratio"].status == "failed"
    assert rows["lines"].output == [{"per": 10}, None, {"per": 2}]
    statuses = list(StepIteration.objects.filter(loop=rows["lines"]).values_list("status", flat=True))
    assert statuses == ["succeeded", "failed", "succeeded"]


def test_an_item_failing_stops_the_loop_and_fails_the_run_by_default(stack, org):
    body = [
        {"key": "ratio", "action_type": "transform", "max_retries": 0, "config": {"value": {"per": "{{ 10 // item }}"}}}
    ]
    run = start_manual_run(workflow=loop_workflow(org, body=body), body={"items": [1, 0, 5]})
    run = wait_for_run(run.pk, {"failed"}, timeout=30, worker=stack)
    rows = instances(run)
    assert "ratio" in run.error and rows["lines"].status == "failed"
    assert "lines[2]/ratio" not in rows and "total" not in rows


def test_over_max_items_is_a_step_failure_naming_the_limit_and_the_setting(stack, org):
    run = start_manual_run(workflow=loop_workflow(org, max_items=3), body={"items": [1, 2, 3, 4]})
    run = wait_for_run(run.pk, {"failed"}, timeout=30, worker=stack)
    loop = instances(run)["lines"]
    assert loop.status == "failed"
    assert "4 items is over the limit of 3 items (max_items=3)" in loop.error
    run = start_manual_run(workflow=loop_workflow(org), body={"items": list(range(1001))})
    run = wait_for_run(run.pk, {"failed"}, timeout=30, worker=stack)
    assert "POTAFLOW_FOR_EACH_MAX_ITEMS" in instances(run)["lines"].error


# -- stop, error path, continue_on_error ---------------------------------------------------
def test_stop_ends_the_run_with_its_status_and_message(stack, org):
    workflow = workflow_create(
        organization=org,
        name="Stop",
        steps=[
            t("a", {"x": 1}),
            {"key": "halt", "action_type": "stop", "config": {"status": "filtered", "message": "not for us"}},
            t("b", {"x": 2}),
        ],
    )
    run = wait_for_run(start_manual_run(workflow=workflow, body={}).pk, {"filtered"}, timeout=30, worker=stack)
    rows = instances(run)
    assert run.error == "not for us" and rows["halt"].status == "succeeded" and "b" not in rows


def test_the_error_path_runs_once_on_a_dead_letter_with_the_failure_and_not_on_success(stack, org, http, tmp_path):
    log = tmp_path / "calls.jsonl"
    notify = {"key": "tell", "action_type": "http.request",
              "config": {"method": "POST", "url": http.url + "/oncall",
                         "body": {"step": "{{ failure.step }}", "error": "{{ failure.error }}",
                                  "attempts": "{{ failure.attempts }}"}}}  # fmt: skip
    workflow = workflow_create(
        organization=org,
        name="Dies",
        steps=[
            {
                "key": "flaky",
                "action_type": "custom",
                "max_retries": 1,
                "backoff_seconds": 0.1,
                "backoff_max_seconds": 0.2,
                "config": {
                    "handler": "test.flaky",
                    "input": {"log": str(log), "fail_times": "{{ trigger.body.fails }}"},
                },
            },
        ],  # fmt: skip
        on_failure=[notify],
    )
    http.route("POST", "/oncall", Reply(200, {"ok": True}))
    ok = start_manual_run(workflow=workflow, body={"fails": 0})
    wait_for_run(ok.pk, {"succeeded"}, timeout=30, worker=stack)
    log.unlink()
    dead = start_manual_run(workflow=workflow, body={"fails": 5})
    dead = wait_for_run(dead.pk, {"failed"}, timeout=30, worker=stack)
    assert dead.dead_lettered
    wait_for(lambda: StepRun.objects.filter(run=dead, key="tell", status="succeeded").exists(), timeout=30)
    time.sleep(1)
    posted = [r for r in http.requests if r.path == "/oncall"]
    assert len(posted) == 1  # once, and not for the run that succeeded
    assert posted[0].json()["step"] == "flaky" and posted[0].json()["attempts"] == 2
    assert "flaky: call 2 fails" in posted[0].json()["error"]
    assert Run.objects.get(pk=dead.pk).status == "failed"
    assert not StepRun.objects.filter(run=ok, error_path=True).exists()


def test_continue_on_error_goes_on_after_a_failed_step(stack, org):
    workflow = workflow_create(
        organization=org,
        name="Tolerant",
        steps=[
            {
                "key": "bad",
                "action_type": "transform",
                "max_retries": 0,
                "continue_on_error": True,
                "config": {"value": {"x": "{{ 1 // 0 }}"}},
            },
            t("next", {"bad": "{{ steps.bad.status }}"}),
        ],  # fmt: skip
    )
    run = wait_for_run(
        start_manual_run(workflow=workflow, body={}).pk, {"succeeded", "failed"}, timeout=30, worker=stack
    )
    rows = instances(run)
    assert run.status == "succeeded" and rows["bad"].status == "failed" and rows["next"].output == {"bad": "failed"}


# -- durable delays and waits -------------------------------------------------------------
@pytest.fixture
def beat(stack):
    process = start_beat()
    yield process
    process.stop()


def delay_workflow(org, delay_config):
    return workflow_create(
        organization=org,
        name="Later",
        steps=[
            t("before", {"x": 1}),
            {"key": "pause", "action_type": "delay", "config": delay_config},
            t("after", {"x": 2}),
        ],
    )


def test_a_delay_survives_a_full_stop_of_worker_and_beat_and_resumes_after_restart(stack, beat, org):
    run = start_manual_run(workflow=delay_workflow(org, {"seconds": 4}), body={})
    run = wait_for_run(run.pk, {"waiting"}, timeout=30, worker=stack)
    pause = StepRun.objects.get(run=run, key="pause")
    assert pause.status == "waiting" and pause.wake_at is not None
    assert not StepRun.objects.filter(run=run, key="after").exists()
    # Beat first: it is what wakes a delay, and the worker's warm shutdown can outlast the delay
    # (5 s on the file broker): stopped in the other order, beat woke it while the worker stopped.
    beat.stop()
    stack.stop()
    time.sleep(5)  # the delay ends while nothing runs
    assert Run.objects.get(pk=run.pk).status == "waiting"
    stack.start()
    restarted = start_beat()
    try:
        run = wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    finally:
        restarted.stop()
    after = StepRun.objects.get(run=run, key="after")
    assert after.started_at >= pause.wake_at


def test_a_delay_until_a_local_time_in_a_time_zone(stack, beat, org):
    zone = ZoneInfo("Asia/Tokyo")
    wake = (timezone.now() + timedelta(seconds=3)).astimezone(zone).replace(microsecond=0)
    until = wake.replace(tzinfo=None).isoformat()  # no offset: read in the config's time zone
    run = start_manual_run(workflow=delay_workflow(org, {"until": until, "timezone": "Asia/Tokyo"}), body={})
    wait_for_run(run.pk, {"waiting"}, timeout=30, worker=stack)
    pause = StepRun.objects.get(run=run, key="pause")
    assert pause.wake_at == wake.astimezone(UTC)
    run = wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    assert StepRun.objects.get(run=run, key="after").started_at >= wake


def wait_workflow(org, **wait_config):
    return workflow_create(
        organization=org,
        name="Hold",
        steps=[
            t("announce", {"url": "{{ run.resume_url('hold') }}"}),
            {"key": "hold", "action_type": "wait", "config": {"kind": "webhook", **wait_config}},
            t("after", {"got": "{{ steps.hold.output }}"}),
        ],
    )


def test_a_wait_is_resumed_by_a_post_to_its_resume_url_and_a_second_post_is_a_duplicate(stack, org, settings):
    run = start_manual_run(workflow=wait_workflow(org, timeout_seconds=600), body={})
    run = wait_for_run(run.pk, {"waiting"}, timeout=30, worker=stack)
    api = APIClient()
    user = User.objects.create_user(email="ed@flow.test", password="pw-123456789!")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    api.force_authenticate(user)
    detail = api.get(f"/api/runs/{run.pk}/").json()
    assert detail["status"] == "waiting"
    hold = next(s for s in detail["steps"] if s["key"] == "hold")
    assert hold["path"] == "hold" and hold["status"] == "waiting" and "attempt_log" in hold
    url = hold["resume_url"]
    announced = StepRun.objects.get(run=run, key="announce").output["url"]
    assert url == announced and url.startswith(settings.POTAFLOW_BASE_URL)
    path = url[len(settings.POTAFLOW_BASE_URL) :]
    client = Client()
    assert client.post("/api/runs/resume/not-a-token/", {"a": 1}, content_type="application/json").status_code == 404
    first = client.post(path, {"ok": True, "n": 3}, content_type="application/json")
    assert first.status_code == 202
    second = client.post(path, {"ok": False}, content_type="application/json")
    assert second.status_code == 409 and "Duplicate" in second.json()["detail"]
    run = wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    assert StepRun.objects.get(run=run, key="after").output == {"got": {"ok": True, "n": 3}}


@pytest.mark.parametrize("on_timeout,status", [("continue", "succeeded"), ("fail", "failed")])
def test_a_wait_that_times_out(stack, beat, org, on_timeout, status):
    run = start_manual_run(workflow=wait_workflow(org, timeout_seconds=2, on_timeout=on_timeout), body={})
    run = wait_for_run(run.pk, {status}, timeout=30, worker=stack)
    hold = StepRun.objects.get(run=run, key="hold")
    if status == "succeeded":
        assert hold.output == {"timed_out": True}
        assert StepRun.objects.get(run=run, key="after").output == {"got": {"timed_out": True}}
    else:
        assert hold.status == "failed" and "timeout_seconds=2" in hold.error and "hold" in run.error


def test_an_approval_by_an_editor_and_a_viewer_is_refused(stack, org):
    workflow = workflow_create(
        organization=org,
        name="Refund",
        steps=[
            {"key": "ok", "action_type": "wait", "config": {"kind": "approval"}},
            t("after", {"approved": "{{ steps.ok.output.approved }}", "by": "{{ steps.ok.output.by }}"}),
        ],
    )
    run = wait_for_run(start_manual_run(workflow=workflow, body={}).pk, {"waiting"}, timeout=30, worker=stack)
    people = {}
    for email, role in (("ed@flow.test", Role.EDITOR), ("vic@flow.test", Role.VIEWER)):
        people[role] = User.objects.create_user(email=email, password="pw-123456789!")
        Membership.objects.create(user=people[role], organization=org, role=role)
    api = APIClient()
    api.force_authenticate(people[Role.VIEWER])
    assert api.post(f"/api/runs/{run.pk}/approve/", {"step": "ok", "approved": True}, format="json").status_code == 403
    api.force_authenticate(people[Role.EDITOR])
    assert (
        api.post(f"/api/runs/{run.pk}/approve/", {"step": "nope", "approved": True}, format="json").status_code == 404
    )
    answer = api.post(f"/api/runs/{run.pk}/approve/", {"step": "ok", "approved": True}, format="json")
    assert answer.status_code == 200
    again = api.post(f"/api/runs/{run.pk}/approve/", {"step": "ok", "approved": False}, format="json")
    assert again.status_code == 409
    run = wait_for_run(run.pk, {"succeeded"}, timeout=30, worker=stack)
    ok = StepRun.objects.get(run=run, key="ok")
    assert ok.output["approved"] is True and ok.output["by"] == "ed@flow.test" and ok.output["at"]
    assert StepRun.objects.get(run=run, key="after").output == {"approved": True, "by": "ed@flow.test"}
