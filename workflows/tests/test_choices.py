"""The value sets that are spelled out twice on purpose stay the same."""

from workflows.models import RunTrigger, TriggerType


def test_a_run_trigger_is_a_workflow_trigger_type_or_a_replay():
    # RunTrigger spells out TriggerType's members so type checkers know them: a new trigger type must be added to both.
    assert RunTrigger.choices == [*TriggerType.choices, ("replay", "Replay")]
    assert [member.name for member in RunTrigger] == [*(member.name for member in TriggerType), "REPLAY"]
