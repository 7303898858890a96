"""The one walk over a flow definition's tree of step lists."""

from workflows.flow import tree

DEFINITION = {
    "steps": [
        {"key": "a", "action_type": "transform", "config": {}},
        {
            "key": "route",
            "action_type": "branch",
            "config": {
                "paths": [{"name": "vip", "when": "{{ x }}", "steps": [{"key": "b", "action_type": "transform"}]}],
                "otherwise": [
                    {
                        "key": "lines",
                        "action_type": "for_each",
                        "config": {"items": "{{ y }}", "steps": [{"key": "c", "action_type": "transform"}]},
                    }
                ],
            },
        },
        {"key": "d", "action_type": "transform"},
    ],
    "on_failure": [{"key": "tell", "action_type": "transform"}],
}


def test_walk_names_each_place_as_validation_reports_it():
    found = [(s.key, s.where, s.depth, s.ancestors, s.in_loop, s.on_failure) for s in tree.walk_definition(DEFINITION)]
    assert found == [
        ("a", "steps[0]", 1, (), False, False),
        ("route", "steps[1]", 1, (), False, False),
        ("b", "steps[1].config.paths[0].steps[0]", 2, (("route", "vip"),), False, False),
        ("lines", "steps[1].config.otherwise[0]", 2, (("route", "otherwise"),), False, False),
        (
            "c",
            "steps[1].config.otherwise[0].config.steps[0]",
            3,
            (("route", "otherwise"), ("lines", "steps")),
            True,
            False,
        ),
        ("d", "steps[2]", 1, (), False, False),
        ("tell", "on_failure[0]", 1, (), False, True),
    ]


def test_a_step_sees_only_what_surely_ran_before_it():
    visible = tree.visible_in_definition(DEFINITION)
    assert visible["b"] == {"a"}
    assert visible["c"] == {"a"}
    assert visible["d"] == {"a", "route"}  # not b, lines or c: a path may not have been taken
    assert visible["tell"] == frozenset()


def test_malformed_configs_do_not_break_the_walk():
    broken = {"steps": [{"key": "x", "action_type": "branch", "config": {"paths": "nope"}}, "junk"]}
    assert [s.key for s in tree.walk_definition(broken)] == ["x"]
