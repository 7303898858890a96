"""``manage.py potaflow_status``: the operator's summary, from the real database and broker."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from testing.worker import broker_at
from workflows.models import Run, TriggerType
from workflows.ops.status import status_report
from workflows.services import workflow_create, workflow_current_version


def status(*args: str) -> str:
    out = StringIO()
    call_command("potaflow_status", *args, stdout=out)
    return out.getvalue()


def make_run(wf, status, *, ago=0, dead=False):
    return Run.objects.create(
        workflow=wf,
        workflow_version=1,
        version=workflow_current_version(wf),
        trigger="manual",
        status=status,
        dead_lettered=dead,
        created_at=timezone.now() - timedelta(seconds=ago),
    )


@pytest.fixture
def busy(org):
    wf = workflow_create(organization=org, name="Manual", trigger_type=TriggerType.MANUAL)
    make_run(wf, "succeeded", ago=60)
    make_run(wf, "succeeded", ago=120)
    make_run(wf, "failed", ago=300, dead=True)
    make_run(wf, "failed", ago=7200, dead=True)  # before the last hour
    make_run(wf, "queued", ago=1800)
    make_run(wf, "running", ago=10)
    workflow_create(
        organization=org,
        name="Nightly",
        trigger_type=TriggerType.SCHEDULE,
        schedule="30 2 * * *",
        timezone="Europe/Paris",
    )
    workflow_create(
        organization=org, name="Every five", trigger_type=TriggerType.SCHEDULE, schedule="*/5 * * * *", timezone="UTC"
    )
    paused = workflow_create(
        organization=org, name="Paused", trigger_type=TriggerType.SCHEDULE, schedule="* * * * *", is_active=False
    )
    return paused


def test_the_summary_counts_runs_dead_letters_and_lists_schedules(busy, settings):
    settings.POTAFLOW_RETAIN_SUCCEEDED_DAYS = 30
    settings.POTAFLOW_RETAIN_FILTERED_DAYS = 0
    text = status()
    assert "Last hour:    5 run(s) created: queued 1, running 1, succeeded 2, failed 1, filtered 0" in text
    assert "Unfinished:   queued 1, running 1, waiting 0; oldest accepted 30 min ago" in text
    assert "Dead letters: 2 in total, 1 in the last hour" in text
    assert "queue 'celery':" in text and "message(s) waiting" in text
    schedules = text.split("Schedules due next:")[1].split("Retention")[0]
    assert schedules.index("Every five") < schedules.index("Nightly")  # soonest first
    assert "Nightly" in schedules and "30 2 * * *" in schedules
    assert "Paused" not in schedules
    assert "succeeded  runs kept 30 day(s)  [POTAFLOW_RETAIN_SUCCEEDED_DAYS]" in text
    assert "failed     runs kept 30 day(s)  [POTAFLOW_RETAIN_FAILED_DAYS]" in text  # the default
    assert "filtered   runs kept forever  [POTAFLOW_RETAIN_FILTERED_DAYS]" in text


def test_the_json_report_has_the_same_facts(busy):
    data = json.loads(status("--json", "--schedules", "1"))
    assert data["recent_by_status"] == {
        "queued": 1,
        "running": 1,
        "succeeded": 2,
        "failed": 1,
        "filtered": 0,
        "waiting": 0,
    }
    assert data["unfinished_by_status"] == {"queued": 1, "running": 1, "waiting": 0}
    assert data["dead_lettered_total"] == 2
    assert data["queue_length"] >= 0 and data["broker_error"] == ""
    assert [s["workflow"] for s in data["schedules"]] == ["Every five"]
    assert data["retention"]["filtered"] == {"setting": "POTAFLOW_RETAIN_FILTERED_DAYS", "days": 3}  # the default


def test_the_next_firing_is_computed_in_the_schedule_time_zone(busy):
    now = datetime(2026, 7, 1, 0, 10, tzinfo=UTC)  # 02:10 in Paris (summer time)
    due = {d.workflow: d for d in status_report(now=now).schedules}
    assert due["Nightly"].at.astimezone(UTC) == datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    assert due["Every five"].at.astimezone(UTC) == datetime(2026, 7, 1, 0, 15, tzinfo=UTC)


def test_a_broker_that_is_down_is_reported_and_the_rest_still_is(busy):
    with broker_at("redis://127.0.0.1:1/0"):
        text = status()
    assert "Broker:       UNREACHABLE (" in text
    assert "Dead letters: 2 in total" in text
