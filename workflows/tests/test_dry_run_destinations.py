"""Test with sample data marks a destination the real run would refuse, with the run's own message."""

import pytest

from integrations.base import ActionContext
from integrations.errors import PermanentError
from integrations.registry import get_action
from workflows import dry_run
from workflows.models import TriggerType, Workflow

pytestmark = pytest.mark.django_db

LOOPBACK = {"method": "POST", "url": "http://127.0.0.1:9/hook", "body": {"n": "{{ trigger.body.n }}"}}


def test_a_refused_destination_is_an_error_in_the_test_with_the_real_runs_message(org, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = []
    workflow = Workflow(organization=org, name="Unsaved", trigger_type=TriggerType.WEBHOOK)
    result = dry_run.dry_run(
        workflow=workflow, payload={"n": 1}, steps=[{"key": "post", "action_type": "http.request", "config": LOOPBACK}]
    )
    (step,) = result["steps"]
    # It used to say "Every step went through" (completed) while the run was refused.
    assert (result["outcome"], step["status"]) == ("error", "error")
    assert step["would_send"]["url"] == "http://127.0.0.1:9/hook"  # what it would have sent is still shown
    with pytest.raises(PermanentError) as real:
        get_action("http.request").run(
            {"method": "POST", "url": "http://127.0.0.1:9/hook", "body": {"n": 1}},
            ActionContext(run_id="r", workflow_id=1, organization_id=org.pk, step_key="post"),
        )
    assert step["error"] == real.value.message
    assert "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS" in step["error"]


def test_an_allowed_destination_previews_as_before(org, settings):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    workflow = Workflow(organization=org, name="Unsaved", trigger_type=TriggerType.WEBHOOK)
    result = dry_run.dry_run(
        workflow=workflow, payload={"n": 1}, steps=[{"key": "post", "action_type": "http.request", "config": LOOPBACK}]
    )
    assert (result["outcome"], result["steps"][0]["status"]) == ("completed", "preview")
