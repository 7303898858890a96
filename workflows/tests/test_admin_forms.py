"""The workflow form round trip: what the change page renders can be saved as it is.

``browser_form_data`` reads a page's form the way a browser submits it
(inputs, checked boxes, each select's selected or first option, textareas),
so these tests resubmit exactly what a person would send by clicking Save.
"""

from html.parser import HTMLParser

import pytest
from django.test import Client

from accounts.models import Role, User
from workflows.models import TriggerType, Workflow
from workflows.services import workflow_create
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db

STEPS = [
    {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.body.n }}"}}},
    {"key": "done", "action_type": "transform", "config": {"value": "{{ steps.shape.output.n }}"}},
]


class _FormReader(HTMLParser):
    """Collects the successful controls of the page's ``<form id=...>`` as a browser would."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.data: list[tuple[str, str]] = []
        self._select: dict | None = None
        self._option: dict | None = None
        self._textarea: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
            return
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "reset", "image", "file"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.data.append((name, a.get("value", "on")))
                return
            self.data.append((name, a.get("value") or ""))
        elif tag == "select" and name:
            self._select = {"name": name, "first": None, "selected": None, "multiple": "multiple" in a}
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
        elif tag == "textarea" and name:
            self._textarea = {"name": name, "text": ""}

    def handle_data(self, data):
        if self._option is not None:
            self._option["text"] += data
        if self._textarea is not None:
            self._textarea["text"] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "option" and self._option is not None and self._select is not None:
            value = self._option["value"] if self._option["value"] is not None else self._option["text"].strip()
            if self._select["first"] is None:
                self._select["first"] = value
            if self._option["selected"] and self._select["selected"] is None:
                self._select["selected"] = value
            self._option = None
        elif tag == "select" and self._select is not None:
            chosen = self._select["selected"]
            if chosen is None and not self._select["multiple"]:
                chosen = self._select["first"]
            if chosen is not None:
                self.data.append((self._select["name"], chosen))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            text = self._textarea["text"]
            # Browsers drop one newline right after <textarea>.
            self.data.append((self._textarea["name"], text[1:] if text.startswith("\n") else text))
            self._textarea = None


def browser_form_data(html: str, form_id: str = "workflow_form") -> dict[str, list[str]]:
    reader = _FormReader(form_id)
    reader.feed(html)
    assert reader.data, f"no form #{form_id} on the page"
    data: dict[str, list[str]] = {}
    for name, value in reader.data:
        data.setdefault(name, []).append(value)
    return data


def staff(org, role, email) -> Client:
    user = make_user(org, role, email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


@pytest.mark.parametrize("trigger", [TriggerType.WEBHOOK, TriggerType.SCHEDULE, TriggerType.MANUAL])
def test_the_change_page_saves_exactly_what_it_rendered_and_changes_nothing(org, trigger):
    extra = {"schedule": "0 9 * * 1", "timezone": "Europe/Paris"} if trigger == TriggerType.SCHEDULE else {}
    wf = workflow_create(organization=org, name="Round trip", trigger_type=trigger, steps=STEPS, **extra)
    client = staff(org, Role.EDITOR, "ed@example.com")
    url = f"/admin/workflows/workflow/{wf.pk}/change/"
    data = browser_form_data(client.get(url).content.decode())
    assert data["steps-TOTAL_FORMS"] == ["3"]  # two steps and the empty extra row

    response = client.post(url, {**data, "_save": ["Save"]})

    assert response.status_code == 302, _errors(response)
    saved = Workflow.objects.get(pk=wf.pk)
    assert saved.version == wf.version  # nothing changed, so no new version
    assert [(s.key, s.action_type, s.config) for s in saved.steps.order_by("position")] == [
        (s["key"], s["action_type"], s["config"]) for s in STEPS
    ]


def test_adding_a_blank_row_and_saving_changes_nothing(org):
    wf = workflow_create(organization=org, name="Blank rows", trigger_type=TriggerType.WEBHOOK, steps=STEPS)
    client = staff(org, Role.EDITOR, "ed@example.com")
    url = f"/admin/workflows/workflow/{wf.pk}/change/"
    data = browser_form_data(client.get(url).content.decode())
    # "Add another step" clones the empty row: a second untouched row.
    data.update({name.replace("steps-2-", "steps-3-"): v for name, v in data.items() if name.startswith("steps-2-")})
    data["steps-TOTAL_FORMS"] = ["4"]

    response = client.post(url, {**data, "_continue": ["Save"]})

    assert response.status_code == 302, _errors(response)
    saved = Workflow.objects.get(pk=wf.pk)
    assert saved.version == wf.version and saved.steps.count() == 2


def test_the_empty_extra_row_offers_a_blank_action_and_an_empty_config(org):
    wf = workflow_create(organization=org, name="Blank row", trigger_type=TriggerType.MANUAL, steps=STEPS)
    html = staff(org, Role.EDITOR, "ed@example.com").get(f"/admin/workflows/workflow/{wf.pk}/change/").content
    data = browser_form_data(html.decode())
    assert data["steps-2-action_type"] == [""]
    assert data["steps-2-config"] in ([""], ["{}"])
    assert '<option value="" selected>— choose an action —</option>' in html.decode()


def test_a_real_error_in_one_step_is_shown_even_when_another_row_is_incomplete(org):
    wf = workflow_create(organization=org, name="Errors", trigger_type=TriggerType.MANUAL, steps=STEPS)
    client = staff(org, Role.EDITOR, "ed@example.com")
    url = f"/admin/workflows/workflow/{wf.pk}/change/"
    data = browser_form_data(client.get(url).content.decode())
    data["steps-1-config"] = ['{"value": "{{ steps.ghost.output }}"}']
    data["steps-2-key"] = ["third"]  # a started row without an action

    response = client.post(url, {**data, "_save": ["Save"]})

    assert response.status_code == 200
    forms = response.context["inline_admin_formsets"][0].formset.forms
    assert "ghost" in str(forms[1].errors["config"])
    assert "action_type" in forms[2].errors
    assert Workflow.objects.get(pk=wf.pk).version == wf.version


def _errors(response) -> str:
    if response.status_code != 200:
        return str(response.status_code)
    form = response.context["adminform"].form
    formsets = [fs.formset for fs in response.context["inline_admin_formsets"]]
    return f"form: {form.errors} formsets: {[fs.errors for fs in formsets]} {[fs.non_form_errors() for fs in formsets]}"
