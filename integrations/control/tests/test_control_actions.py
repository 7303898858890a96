"""The flow control steps as registered actions: listed, configs checked with precise messages,
decisions taken from a rendered config, and never runnable as a plain action."""

from datetime import UTC, datetime

import pytest

from integrations.base import ActionContext
from integrations.errors import ConfigError, PermanentError
from integrations.registry import all_actions, get_action
from workflows import templating

CONTROL = ("branch", "for_each", "delay", "wait", "stop")
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_every_control_step_is_registered_as_control_without_side_effects():
    actions = all_actions()
    for name in CONTROL:
        action = actions[name]
        assert action.control is True and action.has_side_effects is False, name
        assert action.describe()["control"] is True
    assert all_actions()["http.request"].control is False


@pytest.mark.parametrize("name", CONTROL)
def test_run_refuses_to_execute_a_control_step_as_an_action(name):
    ctx = ActionContext(run_id="r", workflow_id=1, organization_id=1, step_key="route")
    with pytest.raises(PermanentError, match=f"{name} is a flow control step.*'route'"):
        get_action(name).run({}, ctx)


@pytest.mark.parametrize(
    ("name", "config", "field", "message"),
    [
        ("branch", {}, "config", "'paths' is a required property"),
        ("branch", {"paths": []}, "config.paths", "should be non-empty"),
        ("branch", {"paths": [{"name": "a", "when": "x", "steps": [3]}]}, "config.paths[0].steps[0]", "not of type"),
        ("branch", {"paths": [{"name": "a b", "when": "x"}]}, "config.paths[0].name", "does not match"),
        (
            "branch",
            {"paths": [{"name": "a", "when": "1"}, {"name": "a", "when": "2"}]},
            "config.paths[1].name",
            "unique",
        ),
        ("branch", {"paths": [{"name": "otherwise", "when": "1"}]}, "config.paths[0].name", "choose another"),
        ("branch", {"paths": [{"name": "a", "when": " "}]}, "config.paths[0].when", "needs a condition"),
        ("branch", {"paths": [{"name": "a", "when": "1"}], "mode": "some"}, "config.mode", "is not one of"),
        ("for_each", {"items": "x"}, "config", "'steps' is a required property"),
        ("for_each", {"items": "x", "steps": [], "max_items": 5000}, "config.max_items", "POTAFLOW_FOR_EACH_MAX_ITEMS"),
        ("for_each", {"items": "x", "steps": [], "parallel": 0}, "config.parallel", "less than the minimum"),
        ("for_each", {"items": "x", "steps": [], "parallel": 50}, "config.parallel", "POTAFLOW_FOR_EACH_MAX_PARALLEL"),
        ("for_each", {"items": "x", "steps": [], "on_item_failure": "skip"}, "config.on_item_failure", "not one of"),
        ("delay", {}, "config", "either seconds or until"),
        ("delay", {"seconds": 5, "until": "2030-01-01T00:00:00"}, "config.seconds", "not both"),
        ("delay", {"seconds": -1}, "config.seconds", "less than the minimum"),
        ("delay", {"until": "next tuesday"}, "config.until", "not an ISO 8601 time"),
        ("delay", {"until": "2030-01-01T09:00", "timezone": "Mars/Olympus"}, "config.timezone", "unknown time zone"),
        ("wait", {"kind": "email"}, "config.kind", "is not one of"),
        ("wait", {"timeout_seconds": 0}, "config.timeout_seconds", "less than or equal to the minimum"),
        ("wait", {"on_timeout": "continue"}, "config.on_timeout", "needs timeout_seconds"),
        ("stop", {"status": "done"}, "config.status", "is not one of"),
        ("stop", {"status": "failed", "extra": 1}, "config", "Additional properties"),
    ],
)
def test_configs_are_refused_naming_the_field(name, config, field, message):
    action = get_action(name)
    with pytest.raises(ConfigError) as exc:
        action.validate_config(templating.prepare_config(action, config, whole=True))
    assert exc.value.field == field
    assert message in exc.value.message


@pytest.mark.parametrize(
    ("name", "config"),
    [
        (
            "branch",
            {"paths": [{"name": "vip", "when": "trigger.body.vip", "steps": []}], "otherwise": [], "mode": "all"},
        ),
        ("for_each", {"items": "{{ trigger.body.lines }}", "steps": [], "parallel": 4, "on_item_failure": "continue"}),
        ("delay", {"seconds": 3600}),
        ("delay", {"until": "{{ trigger.body.at }}", "timezone": "{{ trigger.body.tz }}"}),
        ("delay", {"until": "2030-01-31T09:00:00", "timezone": "Europe/Paris"}),
        ("wait", {"kind": "approval", "timeout_seconds": 86400, "on_timeout": "continue", "message": "Refund?"}),
        ("wait", {}),
        ("stop", {"status": "filtered", "message": "not for us: {{ trigger.body.kind }}"}),
    ],
)
def test_good_configs_pass(name, config):
    action = get_action(name)
    action.validate_config(templating.prepare_config(action, config, whole=True))


def test_prepare_config_leaves_nested_steps_out_and_brackets_conditions():
    nested = [{"key": "x", "action_type": "transform", "config": {"value": "{{ item }}"}}]
    branch = get_action("branch")
    config = {"paths": [{"name": "a", "when": "trigger.body.n > 1", "steps": nested}], "otherwise": nested}
    prepared = templating.prepare_config(branch, config)
    assert prepared == {"paths": [{"name": "a", "when": "{{ trigger.body.n > 1 }}"}]}
    assert [path for path, _ in templating.iter_strings(prepared)] == ["config.paths[0].name", "config.paths[0].when"]
    loop = get_action("for_each")
    assert templating.prepare_config(loop, {"items": "trigger.body.lines", "steps": nested}) == {
        "items": "{{ trigger.body.lines }}"
    }
    whole = templating.prepare_config(loop, {"items": "trigger.body.lines", "steps": nested}, whole=True)
    assert whole["steps"] == nested


def test_branch_chooses_first_or_every_matching_path_else_otherwise():
    branch = get_action("branch")
    paths = [{"name": "big", "when": True}, {"name": "vip", "when": "yes"}, {"name": "none", "when": "false"}]
    assert branch.choose({"paths": paths}) == ["big"]
    assert branch.choose({"paths": paths, "mode": "all"}) == ["big", "vip"]
    assert branch.choose({"paths": [{"name": "a", "when": 0}]}) == ["otherwise"]
    assert branch.preview({"paths": paths})["taken"] == ["big"]


def test_for_each_items_and_the_limit(settings):
    loop = get_action("for_each")
    assert loop.items_of({"items": [1, 2, 3]}) == [1, 2, 3]
    with pytest.raises(PermanentError, match=r"4 items is more than max_items \(3\)"):
        loop.items_of({"items": [1, 2, 3, 4], "max_items": 3})
    settings.POTAFLOW_FOR_EACH_MAX_ITEMS = 2
    with pytest.raises(PermanentError, match="POTAFLOW_FOR_EACH_MAX_ITEMS, 2"):
        loop.items_of({"items": [1, 2, 3], "max_items": 1000})
    with pytest.raises(PermanentError, match="items is an object, not a list"):
        loop.items_of({"items": {"a": 1}})
    with pytest.raises(PermanentError, match="must be a list, got str"):
        loop.items_of({"items": "abc"})
    assert loop.parallelism({"parallel": 99}) == settings.POTAFLOW_FOR_EACH_MAX_PARALLEL
    assert loop.parallelism({}) == 1


def test_delay_resumes_after_seconds_or_at_a_time_in_its_zone():
    delay = get_action("delay")
    assert delay.resume_at({"seconds": 90}, NOW) == datetime(2030, 1, 1, 12, 1, 30, tzinfo=UTC)
    # 09:00 in Paris in January is 08:00 UTC.
    when = delay.resume_at({"until": "2030-01-31T09:00:00", "timezone": "Europe/Paris"}, NOW)
    assert when.astimezone(UTC) == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)
    assert delay.resume_at({"until": "2030-01-31T09:00:00Z", "timezone": "Europe/Paris"}, NOW) == datetime(
        2030, 1, 31, 9, 0, tzinfo=UTC
    )
    assert delay.resume_at({"until": "2020-01-01T00:00:00"}, NOW) == NOW  # a past time: go on now
    with pytest.raises(PermanentError, match="until: 'soon' is not an ISO 8601 time"):
        delay.resume_at({"until": "soon"}, NOW)
    with pytest.raises(PermanentError, match="seconds must be a number"):
        delay.resume_at({"seconds": "ten"}, NOW)


def test_wait_timeout_and_stop_outcome():
    wait, stop = get_action("wait"), get_action("stop")
    assert wait.timeout_at({"timeout_seconds": 60}, NOW) == datetime(2030, 1, 1, 12, 1, tzinfo=UTC)
    assert wait.timeout_at({}, NOW) is None
    assert wait.preview({"kind": "approval"})["resumed_by"].startswith("an editor")
    assert stop.outcome({"status": "failed", "message": "no stock"}) == ("failed", "no stock")
    assert stop.outcome({}) == ("succeeded", "")
    with pytest.raises(PermanentError, match="status must be succeeded, filtered or failed"):
        stop.outcome({"status": "maybe"})
