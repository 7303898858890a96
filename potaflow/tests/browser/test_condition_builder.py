"""The condition builder (webui/static/webui/condition_builder.js): its parser and serializer round trip,
run in Chromium and checked against the server's own evaluation; then built by hand on the builder page."""

import json
from pathlib import Path

import pytest

from workflows import templating
from workflows.models import Workflow

from .test_builder import fits, keep, labelled, register, sign_in

SCRIPT = Path(__file__).resolve().parents[3] / "webui" / "static" / "webui" / "condition_builder.js"

# (canonical expression, value for the context below): what the builder writes, and what the server says.
CANONICAL = [
    ("trigger.body.amount > 100", True),
    ("trigger.body.amount >= 150", True),
    ("trigger.body.amount < 10.5", False),
    ('trigger.body.name == "Ann"', True),
    ('trigger.body.name != "Bob"', True),
    ("trigger.body.vip == true", False),
    ('"nn" in trigger.body.name', True),
    ('"x" not in trigger.body.tags', True),
    ('trigger.body.email is endingwith("@example.com")', True),
    ('trigger.body.name is startingwith("A")', True),
    ('trigger.body.code is matching("^INV-[0-9]+$")', True),
    ('trigger.body.country in ["FR", "DE", 7]', True),
    ("trigger.body.missing is defined", False),
    ("trigger.body.note is not defined", False),
    ("trigger.body.note is empty", True),
    ("trigger.body.tags is not empty", True),
    ("trigger.body.vip is false", True),
    ('trigger.body["first name"] == "Ann"', True),
    ('trigger.body.amount > 100 and trigger.body.country == "FR"', True),
    ('trigger.body.amount > 1000 or "vip" in trigger.body.tags', True),
    ('trigger.body.amount > 100 and (trigger.body.country == "DE" or trigger.body.country == "FR")', True),
    ("trigger.body.amount > 1000 or (trigger.body.vip is false and trigger.body.note is empty)", True),
    ("steps.lookup.output.status == 200", True),
    ('trigger.body.quote == "say \\"hi\\" \\\\ done"', True),
]
# Written differently by hand: the builder reads them and writes them its own way.
EQUIVALENT = [
    ("{{ trigger.body.amount>100 }}", "trigger.body.amount > 100"),
    ("trigger.body.name == 'Ann'", 'trigger.body.name == "Ann"'),
    ("(trigger.body.amount > 100)", "trigger.body.amount > 100"),
    (
        "trigger.body.a == 1 or trigger.body.b == 2 and trigger.body.c == 3",
        "trigger.body.a == 1 or (trigger.body.b == 2 and trigger.body.c == 3)",
    ),
]
# Too much for the builder: it keeps them as expressions.
EXPRESSION_ONLY = [
    "trigger.body.amount | int > 100",
    "trigger.body.items | length > 2",
    "not trigger.body.vip",
    "(a == 1 and (b == 2 or (c == 3 and d == 4)))",
    "{% if x %}1{% endif %}",
    "trigger.body.amount > 100 +",
]
CONTEXT = {
    "trigger": {
        "body": {
            "amount": "150",  # form-encoded: text
            "name": "Ann",
            "first name": "Ann",
            "vip": False,
            "tags": ["vip", "new"],
            "email": "ann@example.com",
            "code": "INV-2031",
            "country": "FR",
            "note": "",
            "quote": 'say "hi" \\ done',
        }
    },
    "steps": {"lookup": {"output": {"status": 200}}},
}


@pytest.fixture
def js(browser):
    page = browser.new_page()
    page.set_content("<!doctype html><html><body></body></html>")
    page.add_script_tag(content=SCRIPT.read_text())
    yield page
    page.close()


def round_trip(js, expression):
    return js.evaluate(
        """e => { const m = PotaflowConditions.parse(e); return m ? PotaflowConditions.serialize(m) : null; }""",
        expression,
    )


def test_round_trip_of_the_builders_expressions_matches_the_server(js):
    for expression, expected in CANONICAL:
        assert round_trip(js, expression) == expression
        assert templating.render_string("{{ " + expression + " }}", CONTEXT) is expected, expression
    for written, canonical in EQUIVALENT:
        assert round_trip(js, written) == canonical
    for expression in EXPRESSION_ONLY:
        assert round_trip(js, expression) is None, expression


def test_a_built_model_serializes_to_what_the_server_evaluates(js):
    model = {
        "join": "all",
        "items": [
            {"field": "trigger.body.amount", "op": "gt", "value": "100"},
            {"field": "trigger.body.name", "op": "contains", "value": "n"},
            {"field": "trigger.body.note", "op": "empty", "value": "ignored"},
            {
                "join": "any",
                "items": [
                    {"field": "trigger.body.country", "op": "inlist", "value": "DE, FR"},
                    {"field": "trigger.body.code", "op": "matches", "value": "^X"},
                ],
            },
            {"field": "", "op": "eq", "value": "unfinished rows are left out"},
        ],
    }
    expression = js.evaluate("m => PotaflowConditions.serialize(m)", model)
    assert expression == (
        'trigger.body.amount > 100 and "n" in trigger.body.name and trigger.body.note is empty'
        ' and (trigger.body.country in ["DE", "FR"] or trigger.body.code is matching("^X"))'
    )
    assert templating.render_string("{{ " + expression + " }}", CONTEXT) is True


def test_build_a_filter_with_the_condition_builder_and_see_it_in_the_json(celery_worker, page, live_server, shot):
    base = live_server.url
    register(base, "cora@example.com", "Cora Co")
    sign_in(page, base, "cora@example.com")
    page.get_by_role("link", name="New workflow").click()
    page.wait_for_selector("#pf-builder[data-ready=true]")
    page.get_by_role("button", name="Form").click()  # the form editor (the flow view is the visual engineer's)
    page.get_by_label("Workflow name").fill("Big orders")
    page.locator("#pf-sample").fill(json.dumps({"amount": 150, "country": "FR", "tags": ["vip"]}))
    page.get_by_role("button", name="+ Add a step").click()
    page.get_by_label("Find an action").fill("condition")  # searchable, with one line per action
    assert page.locator(".pf-action-choice").first.get_attribute("data-action") == "filter"
    shot(page, "action-picker")
    page.get_by_label("Find an action").press("Enter")
    card = page.locator(".pf-step").first
    card.get_by_label("Field of condition 1").fill("trigger.body.amount")
    card.get_by_label("Field of condition 1").press("Tab")  # the field's type (a number) picks the operators
    card.get_by_label("Operator of condition 1").select_option("gt")
    card.get_by_label("Value of condition 1").fill("100")
    card.get_by_role("button", name="Add condition").click()
    card.get_by_label("Field of condition 2").fill("trigger.body.country")
    card.get_by_label("Operator of condition 2").select_option("inlist")
    card.get_by_label("Value of condition 2").fill("FR, DE")
    expected = 'trigger.body.amount > 100 and trigger.body.country in ["FR", "DE"]'
    assert card.locator(".pf-cond-expression").inner_text() == expected
    fits(page)
    labelled(page)
    keep(shot(page, "condition-builder"), "condition-builder")

    # The same expression in the step's JSON...
    card.get_by_role("button", name="Edit as JSON").click()
    assert json.loads(card.locator(".pf-raw").input_value()) == {"condition": expected}
    card.get_by_role("button", name="Back to the form").click()
    # ...as an expression, and back (round trip)...
    card.get_by_role("button", name="Switch to expression").click()
    assert card.locator(".pf-cond-text").input_value() == expected
    card.get_by_role("button", name="Switch to the builder").click()
    assert card.get_by_label("Value of condition 2").input_value() == "FR, DE"
    # ...saved, and run against the sample by the server.
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url("**/app/workflows/*/?saved=1")
    workflow = Workflow.objects.get(name="Big orders")
    assert workflow.steps.get().config == {"condition": expected}
    page.wait_for_selector("#pf-builder[data-ready=true]")
    page.get_by_role("button", name="Test with sample data").click()
    page.wait_for_selector("#pf-builder[data-tested]")
    assert page.locator("#pf-builder").get_attribute("data-tested") == "completed"


def test_a_branch_path_condition_is_built_without_syntax(page, live_server):
    """A branch path's ``when`` gets the same builder as a filter's condition (the loop's items do not)."""
    base = live_server.url
    register(base, "bran@example.com", "Bran Co")
    sign_in(page, base, "bran@example.com")
    page.get_by_role("link", name="New workflow").click()
    page.wait_for_selector("#pf-builder[data-ready=true]")
    page.get_by_role("button", name="Form").click()
    page.get_by_label("Workflow name").fill("VIP or not")
    page.locator("#pf-sample").fill(json.dumps({"amount": 150, "tier": "vip"}))
    page.get_by_role("button", name="+ Add a step").click()
    page.get_by_label("Find an action").fill("paths")
    page.locator('.pf-action-choice[data-action="branch"]').click()
    card = page.locator(".pf-step").first
    if not card.locator(".pf-path-edit").count():
        card.locator(".pf-add-path-form").click()
    card.locator(".pf-when-toggle").first.click()
    card.get_by_label("Field of condition 1").fill("trigger.body.tier")
    card.get_by_label("Field of condition 1").press("Tab")
    card.get_by_label("Operator of condition 1").select_option("eq")
    card.get_by_label("Value of condition 1").fill("vip")
    when = card.locator(".pf-path-when-input").first
    assert when.input_value() == 'trigger.body.tier == "vip"'
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url("**/app/workflows/*/?saved=1")
    saved = Workflow.objects.get(name="VIP or not").steps.get().config
    assert saved["paths"][0]["when"] == 'trigger.body.tier == "vip"'
