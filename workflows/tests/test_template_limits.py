"""Hostile templates: each fails quickly with the limit named, at save time where it is static."""

import time

import pytest

from workflows import templating
from workflows.services import WorkflowInvalid, workflow_create

CONTEXT = {"trigger": {"body": {"n": 200000, "big": 100000}}, "steps": {}, "run": {}, "workflow": {}}


def render(template: str):
    started = time.process_time()
    with pytest.raises(templating.TemplateError) as exc:
        templating.render_value({"value": template}, CONTEXT)
    assert time.process_time() - started < 3, "a limit must stop the render quickly"
    return exc.value.message


def test_lipsum_with_a_huge_count_is_refused():
    assert "lipsum" in render("{{ lipsum(n=trigger.body.n) }}")


def test_string_doubling_stops_at_the_size_limit():
    doubling = "{% set a = lipsum(n=5) %}" + "{% set a = a ~ a %}" * 13 + "{{ a }}"
    message = render(doubling)
    assert "template limit exceeded" in message and "POTAFLOW_TEMPLATE_MAX_CHARS" in message


def test_plus_and_join_are_bounded_too():
    assert "POTAFLOW_TEMPLATE_MAX_CHARS" in render('{{ ("x" * 900000) + ("y" * 900000) }}')
    assert "join" in render('{{ ["' + "x" * 1000 + '"] * 2000 | join(",") }}')
    assert "replace" in render('{{ ("x" * 100000) | replace("x", "yyyyyyyyyyyyyyyyyyyy") }}')


def test_lists_cannot_be_mutated():
    message = render("{% set l = [] %}{% for i in range(10) %}{{ l.append(i) }}{% endfor %}")
    assert "not allowed in a template" in message and "append" in message


def test_nested_loops_stop_at_the_iteration_limit():
    message = render(
        "{% for i in range(trigger.body.big) %}{% for j in range(trigger.body.big) %}{% endfor %}{% endfor %}"
    )
    assert "loop iterations" in message and "POTAFLOW_TEMPLATE_MAX_ITERATIONS" in message


def test_recursion_without_loops_stops_at_the_cpu_budget(settings):
    settings.POTAFLOW_TEMPLATE_CPU_SECONDS = 0.3
    bomb = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(25) }}"
    message = render(bomb)
    assert "CPU" in message and "POTAFLOW_TEMPLATE_CPU_SECONDS" in message


def test_the_budget_is_shared_by_every_string_of_a_config(settings):
    settings.POTAFLOW_TEMPLATE_MAX_ITERATIONS = 150
    loop = "{% for i in range(100) %}.{% endfor %}"
    assert templating.render_value({"a": loop}, CONTEXT) == {"a": "." * 100}
    with pytest.raises(templating.TemplateError, match="150 loop iterations"):
        templating.render_value({"a": loop, "b": loop}, CONTEXT)


def test_ordinary_templates_still_render():
    assert templating.render_value({"v": "{% for i in range(3) %}{{ i }}{% endfor %}-{{ 'a' ~ 'b' }}"}, CONTEXT) == {
        "v": "012-ab"
    }
    assert templating.render_value({"v": "{{ [1, 2] + [3] }}"}, CONTEXT) == {"v": [1, 2, 3]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "source, named",
    [
        ("{% for i in range(10000000) %}x{% endfor %}", "POTAFLOW_TEMPLATE_MAX_ITERATIONS"),
        ("{{ lipsum(n=200000) }}", "lipsum"),
    ],
)
def test_limits_visible_in_the_template_are_refused_at_save_time(org, source, named):
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(
            organization=org,
            name="Bomb",
            steps=[{"key": "t", "action_type": "transform", "config": {"value": source}}],
        )
    assert named in str(exc.value.errors["steps[0].config.value"])


def test_each_render_gets_a_fresh_budget(settings):
    """A budget never outlives its render (it once stuck to the thread and failed every later render)."""
    settings.POTAFLOW_TEMPLATE_CPU_SECONDS = 0.05
    assert templating.render_string("{{ 1 + 1 }}", CONTEXT) == 2
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert templating.render_string("{{ 1 + 2 }}", CONTEXT) == 3
    assert templating.render_value({"v": "{% for i in range(2) %}{{ i }}{% endfor %}"}, CONTEXT) == {"v": "01"}
