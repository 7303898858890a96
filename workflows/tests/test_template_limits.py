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


# -- every filter has a budget (issue 18) ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(templating._env.filters))
def test_every_filter_of_the_sandbox_has_a_budget_entry_and_runs_budgeted(name):
    """A filter added to the sandbox (a Jinja upgrade, a new one of ours) fails here until it has a budget."""
    assert name in templating.FILTER_BUDGETS, f"{name!r}: add it to FILTER_BUDGETS with what bounds it"
    func = templating._env.filters[name]
    assert getattr(func, "potaflow_budgeted", False) or name == templating._COUNTED_ITER_FILTER


# One bomb per filter that can grow a string or a structure beyond its input: each must end on its limit,
# before building (a pre-check) or right after (charged), within the CPU budget.
GROWTH_BOMBS = {
    "batch": "{{ [1] | batch(999999999, 'x') | list | length }}",
    "center": "{{ 'a' | center(99999) }}",
    "e": "{{ ('&' * 999999) | e | length }}",
    "escape": "{{ ('<' * 999999) | escape | length }}",
    "forceescape": "{{ ('&' * 999999) | forceescape | forceescape | length }}",
    "format": "{{ ('%9999s' * 200) | format(*(['a'] * 200)) | length }}",
    "indent": "{{ ('\n' * 500000) | indent(9999) | length }}",
    "join": "{{ (['x' * 1000] * 1001) | join(',') | length }}",
    "list": "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 30 + "{{ a | list | string | length }}",
    "lower": "{{ ('İ' * 999999) | lower | length }}",
    "pprint": "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 30 + "{{ a | pprint | length }}",
    "replace": "{{ ('x' * 100000) | replace('x', 'yyyyyyyyyyyyyyyyyyyy') }}",
    "slice": "{{ [1] | slice(99999999) | list | length }}",
    "string": "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 30 + "{{ a | string | length }}",
    "sum": "{{ ([['x'] * 1000] * 1001) | sum(start=[]) | length }}",
    "title": "{{ ('ß ' * 499999) | title | length }}",
    "tojson": "{{ ('<' * 999999) | tojson | tojson | length }}",
    "upper": "{{ ('ß' * 999999) | upper | length }}",
    "urlencode": "{{ ('é' * 999999) | urlencode | length }}",
    "urlize": "{{ ('a.co ' * 199999) | urlize | length }}",
    "wordwrap": "{{ ('a' * 999999) | wordwrap(1, wrapstring='xxxxxxxxxx') | length }}",
    "xmlattr": "{{ {'a': '\"' * 999999} | xmlattr | length }}",
}


@pytest.mark.parametrize("name", sorted(GROWTH_BOMBS))
def test_a_filter_that_grows_its_input_ends_on_its_limit(name):
    assert name in templating.FILTER_BUDGETS
    message = render(GROWTH_BOMBS[name])
    assert "POTAFLOW_TEMPLATE_MAX_CHARS" in message or "widths above" in message, message


def test_every_filter_with_a_check_before_building_has_a_bomb():
    assert set(templating.PRECHECKS) - set(GROWTH_BOMBS) == set()


def test_str_methods_and_output_are_measured_too():
    assert "widths above" in render("{{ 'a'.ljust(999999999) }}")
    assert "widths above" in render("{{ 'a'.zfill(999999999) }}")
    assert "MAX_CHARS" in render("{{ ('\t' * 999999).expandtabs(9999) | length }}")
    assert "MAX_CHARS" in render("{{ ','.join(['x' * 1000] * 1001) | length }}")
    assert "MAX_CHARS" in render("{{ ('{:>9999}' * 200).format(*(['a'] * 200)) | length }}")
    assert "MAX_CHARS" in render("{{ ('%9999s' * 200) % (('a',) * 200) }}")
    shared = "{% set a = ['x' * 1000] %}" + "{% set a = [a, a] %}" * 30
    assert "MAX_CHARS" in render(shared + "{{ a }}")  # str() of a structure sharing itself 2**30 times
    assert "MAX_CHARS" in render(shared + "{{ a }} ")
    assert "MAX_CHARS" in render(shared + "{{ (a ~ '') | length }}")


def test_a_lookup_passes_a_large_stored_value_whole_and_anything_built_on_it_is_still_measured():
    # A 5 MB CSV's parsed rows (issue 23) are read by the next step's "{{ steps.parse.output.rows }}": the
    # template builds nothing, the rows were bounded by file.parse's own limits when they were stored.
    rows = [[str(i), "lorem ipsum dolor " * 10] for i in range(20_000)]  # ~4.5 million characters as JSON
    context = {**CONTEXT, "steps": {"parse": {"output": {"rows": rows}}}}
    for lookup in ("{{ steps.parse.output.rows }}", "{{ steps['parse'].output['rows'] }}"):
        assert templating.render_value({"rows": lookup}, context) == {"rows": rows}
    for built in ("{{ steps.parse.output.rows | list }}", "{{ [steps.parse.output.rows] }}",
                  "{{ steps.parse.output.rows[:] }}", "{{ (steps.parse.output.rows, 1)[0] }}"):  # fmt: skip
        with pytest.raises(templating.TemplateError, match="POTAFLOW_TEMPLATE_MAX_CHARS"):
            templating.render_value({"rows": built}, context)
    context["steps"]["parse"]["output"]["text"] = "x" * 1_000_001  # a string result is held to the limit still
    with pytest.raises(templating.TemplateError, match="POTAFLOW_TEMPLATE_MAX_CHARS"):
        templating.render_value({"text": "{{ steps.parse.output.text }}"}, context)


def test_the_cpu_budget_ends_a_render_inside_one_long_filter_in_about_the_budget(settings):
    settings.POTAFLOW_TEMPLATE_CPU_SECONDS = 0.3
    started = time.thread_time()
    message = render("{% for i in range(99999) %}{{ range(99999) | map('string') | join | length }}{% endfor %}")
    assert "POTAFLOW_TEMPLATE_CPU_SECONDS" in message
    assert time.thread_time() - started < 0.3 + 0.3


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 100 + "1" + ")" * 100 + " }}",
        "{{ " + "[" * 100 + "]" * 100 + " }}",
        "{{ " + "- " * 400 + "1 }}",
        "{{ 1" + "|abs" * 400 + " }}",
        "x{{ " + "(" * 100 + "1" + ")" * 100 + " }}",
    ],
)
def test_deep_nesting_is_refused_naming_the_limit_not_a_recursion_error(source):
    with pytest.raises(templating.TemplateError, match="POTAFLOW_TEMPLATE_MAX_NESTING"):
        templating.check_template(source, earlier_steps=[])
    assert "POTAFLOW_TEMPLATE_MAX_NESTING" in render(source)


def test_a_long_filter_chain_is_not_nesting():
    templating.check_template("{{ 'a'" + " | upper" * 60 + " }}", earlier_steps=[])


def test_template_source_is_capped(settings):
    settings.POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS = 1000
    with pytest.raises(templating.TemplateError, match="POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS"):
        templating.check_template("{{ trigger.body }}" + "x" * 1000, earlier_steps=[])
    assert "POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS" in render("{{ trigger.body }}" + "x" * 1000)


def test_checking_a_definition_s_templates_has_a_cpu_budget(settings):
    settings.POTAFLOW_TEMPLATE_CPU_SECONDS = 0.05
    heavy = ("{{ 1+2*3-4 }}" * 3000)[:32000]
    started = time.thread_time()
    with pytest.raises(templating.TemplateError, match="POTAFLOW_TEMPLATE_CPU_SECONDS"), templating.check_budget():
        for _ in range(20):
            templating.check_template(heavy, earlier_steps=[])
    assert time.thread_time() - started < 0.05 + 0.5
