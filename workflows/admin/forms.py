"""Forms for the workflow admin: the workflow and step forms, JSON edited readably, service errors on the right field.

Validation itself lives in ``workflows.services`` (``workflow_validate``);
this module only decides *where* each of its messages is shown: the service
names fields as paths (``steps[1].config.url``, ``schedule``), and
``attach_errors`` puts ``steps[i]...`` on the i-th step form's field and the
rest on the workflow form.
"""

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts.models import Organization
from integrations.registry import all_actions

from .. import services
from ..intake.signatures import SIGNING_FIELDS
from ..models import STEP_POLICY_FIELDS, Step, Workflow
from .widgets import pretty_json

if TYPE_CHECKING:
    _StepModelForm = forms.ModelForm[Step]
    _WorkflowModelForm = forms.ModelForm[Workflow]
    _StepFormSetBase = BaseInlineFormSet[Step, Workflow, forms.ModelForm[Step]]
else:  # Django's form classes are not subscriptable at run time
    _StepModelForm = _WorkflowModelForm = forms.ModelForm
    _StepFormSetBase = BaseInlineFormSet

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
    workflow_form: forms.BaseForm | None,
    step_forms: Sequence[forms.BaseForm],
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

    organization: "forms.ModelChoiceField[Organization]" = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=150)

    def __init__(
        self,
        *args: Any,
        organizations: Any,
        references: Sequence[dict[str, Any]],
        credentials: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # ``fields`` holds this form's copies of the declared fields (the organization one is declared above).
        cast("forms.ModelChoiceField[Organization]", self.fields["organization"]).queryset = organizations
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
                choices=[("", "—"), *choices],
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


# -- the workflow page's forms ------------------------------------------------------------
class StepForm(_StepModelForm):
    action_type = forms.ChoiceField(choices=(), help_text="From the action registry.")
    config = PrettyJSONField(
        required=False,
        initial=dict,  # an empty row shows {} (not null) and stays "unchanged" until edited
        help_text="JSON object; strings may hold templates such as {{ trigger.body.email }}. "
        "The chosen action's schema is shown below.",
    )

    class Meta:
        model = Step
        fields = STEP_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A blank first choice: an untouched extra row must post "", or Django sees it as changed.
        action_type = cast(forms.ChoiceField, self.fields["action_type"])  # declared above
        action_type.choices = [("", "— choose an action —"), *action_choices()]
        self.fields["position"].required = False
        self.fields["position"].help_text = "Order of execution (renumbered from 0 on save)."


class StepFormSet(_StepFormSetBase):
    def clean(self) -> None:
        """Validate the whole definition with the service, before anything is saved.

        Rows with field errors of their own take part with what they have, so the
        other rows' real problems (templates, references) are shown in the same
        round; a service message is dropped where the row's field already has an error.
        """
        super().clean()
        ordered = self.step_forms()
        try:
            services.workflow_validate(workflow=self.instance, steps=self.step_specs())
        except services.WorkflowInvalid as exc:
            # Workflow-level problems (schedule, secret...) are shown by WorkflowForm itself.
            step_errors = {
                path: msgs
                for path, msgs in exc.errors.items()
                if path.startswith("steps") and not _already_reported(path, ordered)
            }
            leftovers = attach_errors(step_errors, workflow_form=None, step_forms=ordered)
            if leftovers:
                raise ValidationError(leftovers) from None

    def step_forms(self) -> "list[forms.ModelForm[Step]]":
        """The step forms in execution order: ``step_specs()[i]`` comes from ``step_forms()[i]``.

        An untouched extra row is not a step; a row someone started is, even with errors.
        """
        rows = [
            form
            for index, form in enumerate(self.forms)
            if (index < self.initial_form_count() or form.has_changed())
            and not form.cleaned_data.get(DELETION_FIELD_NAME, False)
        ]
        position = lambda form: form.cleaned_data.get("position")  # noqa: E731
        rows.sort(key=lambda form: position(form) if position(form) is not None else 10_000)
        return rows

    def step_specs(self) -> list[dict[str, Any]]:
        return [{f: form.cleaned_data.get(f) for f in STEP_FIELDS if f != "position"} for form in self.step_forms()]


def _already_reported(path: str, step_forms: Sequence[forms.BaseForm]) -> bool:
    """True when the service's ``steps[i].field`` message repeats an error the row's form already shows."""
    match = STEP_PATH_RE.match(path)
    if not match or int(match.group(1)) >= len(step_forms):
        return False
    form = step_forms[int(match.group(1))]
    field = match.group(2)
    return bool(form.errors) and (field in form.errors or field not in form.fields)


class WorkflowForm(_WorkflowModelForm):
    """Workflow fields, checked by the service; the webhook secret is write-only."""

    webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only (at least 16 characters). Leave empty to keep the current one.",
    )
    remove_webhook_secret = forms.BooleanField(required=False, help_text="Accept unsigned webhook requests again.")
    webhook_secret_previous = forms.CharField(
        required=False,
        max_length=128,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. While senders move to a new secret, the previous one is accepted too. "
        "Leave empty to keep the current one.",
    )
    remove_webhook_secret_previous = forms.BooleanField(
        required=False, help_text="Stop accepting the previous secret (rotation finished)."
    )

    class Meta:
        model = Workflow
        fields = (
            *("organization", "name", "description", "is_active", "trigger_type", "webhook_secret"),
            *SIGNING_FIELDS,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored_secret = self.instance.webhook_secret if self.instance.pk else ""
        self._stored_previous = self.instance.webhook_secret_previous if self.instance.pk else ""
        # A form posted without them (an older page, a script) keeps the model defaults.
        for name in ("signature_scheme", "hmac_algorithm", "hmac_encoding"):
            if name in self.fields:
                self.fields[name].required = False

    def _clean_choice(self, name: str) -> str:
        field = Workflow._meta.get_field(name)
        default = field.get_default() if isinstance(field, models.Field) else ""  # always a model field here
        return self.cleaned_data.get(name) or default

    def clean_signature_scheme(self) -> str:
        return self._clean_choice("signature_scheme")

    def clean_hmac_algorithm(self) -> str:
        return self._clean_choice("hmac_algorithm")

    def clean_hmac_encoding(self) -> str:
        return self._clean_choice("hmac_encoding")

    def clean_webhook_secret(self) -> str:
        value = self.cleaned_data.get("webhook_secret") or ""
        if self.data.get(self.add_prefix("remove_webhook_secret")):
            return ""
        return value or self._stored_secret

    def clean_webhook_secret_previous(self) -> str:
        value = self.cleaned_data.get("webhook_secret_previous") or ""
        if self.data.get(self.add_prefix("remove_webhook_secret_previous")) or self.data.get(
            self.add_prefix("remove_webhook_secret")
        ):
            return ""
        return value or self._stored_previous

    def _post_clean(self) -> None:
        # Django's hook once the form's values are on the instance.
        super()._post_clean()  # type: ignore[misc]  # the stubs leave this Django hook out
        try:
            services.workflow_validate(workflow=self.instance, steps=[])
        except services.WorkflowInvalid as exc:
            leftovers = attach_errors(exc.errors, workflow_form=self, step_forms=[])
            for message in leftovers:
                self.add_error(None, message)
