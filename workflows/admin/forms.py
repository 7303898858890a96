"""Forms for the workflow admin: JSON edited readably, service errors on the right field.

Validation itself lives in ``workflows.services`` (``workflow_validate``);
this module only decides *where* each of its messages is shown: the service
names fields as paths (``steps[1].config.url``, ``schedule``), and
``attach_errors`` puts ``steps[i]...`` on the i-th step form's field and the
rest on the workflow form.
"""

import json
import re
from collections.abc import Sequence
from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from integrations.registry import all_actions

from ..models import STEP_POLICY_FIELDS
from .widgets import pretty_json

STEP_PATH_RE = re.compile(r"^steps\[(\d+)\](?:\.(\w+))?")
# The Step inline's columns: the step's fields (``models.STEP_POLICY_FIELDS`` is the one list of the
# retry policy), in the order the inline shows them.
STEP_FIELDS = ("position", "key", "action_type", "config", "credential", *STEP_POLICY_FIELDS)
# Fields a step-level validation error can be shown on (position has no errors of its own).
STEP_FORM_FIELDS = set(STEP_FIELDS) - {"position"}


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented (Django's shows one long line)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "pf-mono"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class RunNowForm(forms.Form):
    payload = PrettyJSONField(
        required=False,
        initial=dict,
        help_text="Optional JSON: templates see it as trigger.body. Leave {} for an empty payload.",
    )

    def clean_payload(self) -> Any:
        value = self.cleaned_data.get("payload")
        return {} if value in (None, "") else value


def action_choices() -> list[tuple[str, str]]:
    actions = all_actions()
    return [(name, f"{name} — {actions[name].title or name}") for name in sorted(actions)]


def action_schemas() -> dict[str, Any]:
    """What the change form's script shows under a step's config for the chosen action."""
    return {name: action.describe() for name, action in sorted(all_actions().items())}


def action_reference() -> SafeString:
    """Every registered action with its config schema, for the workflow page."""
    rows = []
    for name, info in action_schemas().items():
        credential = info["credential_kind"] or "none"
        rows.append(
            (
                name,
                info["title"],
                info["description"],
                credential if not isinstance(credential, list) else ", ".join(credential),
                pretty_json(info["config_schema"], "config schema"),
            )
        )
    return format_html(
        '<div class="pf-action-reference">{}</div>',
        format_html_join(
            "",
            "<div><strong><code>{}</code></strong> {} <div>{}</div><div>credential: {}</div>{}</div><hr>",
            rows,
        ),
    )


def attach_errors(
    errors: dict[str, list[str]],
    *,
    workflow_form: forms.Form | None,
    step_forms: Sequence[forms.Form],
) -> list[str]:
    """Put each service error on the field it names; return those that fit nowhere.

    ``step_forms[i]`` must be the form of ``steps[i]`` in the list given to the service.
    """
    leftovers: list[str] = []
    for path, messages in errors.items():
        match = STEP_PATH_RE.match(path)
        for message in messages:
            if match:
                index, field = int(match.group(1)), match.group(2)
                if index < len(step_forms):
                    target = step_forms[index]
                    target.add_error(field if field in STEP_FORM_FIELDS and field in target.fields else None, message)
                    continue
            elif workflow_form is not None:
                field = path.split(".")[0]
                if field in workflow_form.fields:
                    workflow_form.add_error(field, message)
                    continue
            leftovers.append(f"{path}: {message}")
    return leftovers


class TemplateImportForm(forms.Form):
    """ "New from template": where, under which name, and which credential each reference uses.

    The credential choices are those of the kind each reference asks for in the
    organizations the user may edit; ``workflows.portability`` checks the
    chosen one belongs to the chosen organization.
    """

    organization = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=150)

    def __init__(self, *args: Any, organizations: Any, references: Sequence[dict], credentials: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = organizations
        self.references = list(references)
        for index, reference in enumerate(self.references):
            choices = [
                (credential.pk, f"{credential.organization.name}: {credential.name}")
                for credential in credentials
                if credential.kind == reference["kind"]
            ]
            self.fields[f"credential_{index}"] = forms.TypedChoiceField(
                coerce=int,
                label=f"Credential “{reference['name']}”",
                choices=[("", "—")] + choices,
                required=False,
                help_text=f"A {reference['kind']} credential. Blank: your credential named "
                f"“{reference['name']}” of that kind.",
            )

    def credential_mapping(self) -> dict[str, int]:
        return {
            reference["name"]: self.cleaned_data[f"credential_{index}"]
            for index, reference in enumerate(self.references)
            if self.cleaned_data.get(f"credential_{index}")
        }
