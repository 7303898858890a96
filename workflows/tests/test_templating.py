import pytest

from workflows import templating
from workflows.templating import TemplateError, check_template, render_value

CONTEXT = {
    "trigger": {"body": {"email": "a@example.com", "count": 3, "items": [1, 2], "obj": {"x": 1}}, "headers": {}},
    "steps": {"lookup": {"output": {"id": 42}}},
    "run": {"id": "r-1"},
    "workflow": {"id": 7, "name": "W"},
}


def test_a_single_expression_keeps_its_json_type():
    assert render_value("{{ trigger.body.count }}", CONTEXT) == 3
    assert render_value("  {{ trigger.body.obj }} ", CONTEXT) == {"x": 1}
    assert render_value("{{ trigger.body.items }}", CONTEXT) == [1, 2]
    assert render_value("{{ trigger.body.count > 2 }}", CONTEXT) is True


def test_mixed_text_renders_to_a_string():
    assert render_value("id={{ steps.lookup.output.id }}", CONTEXT) == "id=42"
    assert render_value("{{ trigger.body.count }}{{ trigger.body.count }}", CONTEXT) == "33"


def test_nested_values_are_rendered_and_keys_are_not():
    value = {"{{ a }}": ["{{ run.id }}", {"n": "{{ workflow.id }}"}], "plain": 1}
    assert render_value(value, CONTEXT) == {"{{ a }}": ["r-1", {"n": 7}], "plain": 1}


def test_an_undefined_variable_is_an_error_naming_it():
    with pytest.raises(TemplateError) as exc:
        render_value({"to": "{{ trigger.body.missing_field }}"}, CONTEXT)
    assert "missing_field" in exc.value.message
    assert "config.to" in exc.value.message


def test_undefined_inside_text_is_an_error_too():
    with pytest.raises(TemplateError, match="nope"):
        render_value("hello {{ nope }}", CONTEXT)


def test_the_sandbox_refuses_unsafe_attribute_access():
    with pytest.raises(TemplateError, match="not allowed|unsafe|undefined"):
        render_value("{{ trigger.__class__.__mro__ }}", CONTEXT)


def test_syntax_errors_are_reported_at_save_time():
    with pytest.raises(TemplateError, match="syntax"):
        check_template("{{ trigger.body.x ", earlier_steps=[])


def test_references_to_later_or_unknown_steps_are_rejected():
    check_template("{{ steps.lookup.output.id }}", earlier_steps=["lookup"])
    with pytest.raises(TemplateError, match="'later'"):
        check_template("{{ steps.later.output }}", earlier_steps=["lookup"])
    with pytest.raises(TemplateError, match="'other'"):
        check_template("{{ steps['other'].output }}", earlier_steps=[])


def test_unknown_top_level_names_are_rejected():
    with pytest.raises(TemplateError, match="'body'"):
        check_template("{{ body.email }}", earlier_steps=[])


def test_single_expression_detection():
    assert templating.single_expression("{{ a }}") == " a "
    assert templating.single_expression("{{ a }} {{ b }}") is None
    assert templating.single_expression("x {{ a }}") is None


# -- the condition rule (issue 17, defect 6) ----------------------------------------------------
@pytest.mark.parametrize(
    ("condition", "expected", "noted"),
    [
        ("trigger.body.amount >= 100", False, True),
        ("{{ trigger.body.amount >= 100 }}", False, True),
        ("trigger.body.amount", False, True),
        ("not trigger.body.amount", True, True),
        ('"vip" in trigger.body.tags', False, True),
        ("trigger.body.amount * 2 > 3 or trigger.body.n == 1", True, True),
        ("trigger.body.amount | default(0) > 1", False, False),
        ("trigger.body.amount is defined", False, False),
        ("trigger.body.n >= 1", True, False),
    ],
)
def test_an_undefined_value_in_a_condition_is_false_and_noted(condition, expected, noted):
    from integrations.registry import get_action
    from workflows.templating import prepare_config, render_value

    rendered = render_value(
        prepare_config(get_action("filter"), {"condition": condition}), {"trigger": {"body": {"n": 1}}}
    )
    assert rendered["condition"] is expected
    assert ("_undefined" in rendered) is noted
    if noted:
        assert rendered["_undefined"]["condition"][0].startswith("'")


def test_outside_a_condition_an_undefined_value_is_still_an_error():
    from integrations.registry import get_action
    from workflows.templating import TemplateError, prepare_config, render_value

    config = prepare_config(get_action("transform"), {"value": "{{ trigger.body.amount >= 100 }}"})
    with pytest.raises(TemplateError, match="undefined variable"):
        render_value(config, {"trigger": {"body": {}}})
