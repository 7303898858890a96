"""Credential admin: organization-scoped, admins and owners only, secrets write-only.

The form carries one group of fields per credential kind (only the chosen
kind's group is used, and the add page's script shows only that one); on
change only the credential's own kind is shown.
Secret inputs are never pre-filled: leaving one empty keeps the stored value.
Validation and encryption go through ``services`` like the API.
A connection shows its status, account, scopes and expiry; its tokens are
neither shown nor editable (Connect and Disconnect live on the member
credentials page), and a connected credential's client id and endpoints
cannot change (``services.credential_refuse_rebinding``).
"""

from typing import TYPE_CHECKING, Any, TypedDict, cast

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import escape, format_html_join

from accounts.admin_mixins import OrganizationScopedAdmin
from accounts.models import Role
from accounts.selectors import organization_ids_for

from . import services
from .credential_kinds import KINDS, Field, KindSpec, clean_fields
from .models import ConnectionStatus, Credential, CredentialKind
from .oauth.flow import credential_delete
from .oauth.selectors import connection_info

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec
    from django_stubs_ext import StrOrPromise

    _CredentialModelForm = forms.ModelForm[Credential]
else:
    _CredentialModelForm = forms.ModelForm  # not subscriptable at run time


class _FieldOptions(TypedDict):
    """The options every kind field passes to its form field."""

    label: str
    required: bool
    help_text: str


def form_field_name(kind: str, name: str) -> str:
    return f"{kind}__{name}"


def _form_field(spec: KindSpec, f: Field, *, editing: bool) -> forms.Field:
    label = f"{f.name.replace('_', ' ')}"
    help_text: str = escape(f.help)  # the admin renders help text as HTML: "Bearer <token>" must show as typed
    if f.secret:
        help_text = (help_text + " " if help_text else "") + (
            "Write-only: leave empty to keep the stored value." if editing else "Write-only: never shown again."
        )
    common: _FieldOptions = {"label": label, "required": False, "help_text": help_text}
    if f.type == "json":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}), **common)
    if f.secret:
        return forms.CharField(
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}), **common
        )
    if f.type == "choice":
        return forms.ChoiceField(choices=[("", "---")] + [(c, c) for c in f.choices], **common)
    if f.type == "integer":
        return forms.IntegerField(**common)
    if f.type == "hosts":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "autocomplete": "off"}), **common)
    return forms.CharField(**common)


class CredentialForm(_CredentialModelForm):
    kinds: tuple[str, ...] = tuple(KINDS)

    class Meta:
        model = Credential
        fields = ["organization", "name", "kind"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        editing = bool(self.instance and self.instance.pk)
        for kind in self.kinds:
            spec = KINDS[kind]
            for f in spec.fields:
                field = _form_field(spec, f, editing=editing)
                if editing and not f.secret:
                    value = self.instance.public_data.get(f.name)
                    field.initial = ", ".join(value) if isinstance(value, list) else value
                self.fields[form_field_name(kind, f.name)] = field

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() checks uniqueness and returns cleaned_data
        cleaned = self.cleaned_data
        kind = cleaned.get("kind") or (self.instance.kind if self.instance.pk else None)
        if not kind:
            return cleaned
        data: dict[str, Any] = {}
        for f in KINDS[kind].fields:
            value = cleaned.get(form_field_name(kind, f.name))
            if value not in (None, ""):
                data[f.name] = value
        self.kind_data = data
        try:
            # Validate now so errors show next to the fields; the service validates again on save.

            if self.instance.pk:
                public, _ = clean_fields(
                    kind,
                    data,
                    existing_public=self.instance.public_data,
                    existing_secret=services.credential_reveal(self.instance),
                )
                services.credential_refuse_rebinding(self.instance, public)
            else:
                clean_fields(kind, data)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                target = form_field_name(kind, name)
                self.add_error(target if target in self.fields else None, messages)
        return cleaned


@admin.register(Credential)
class CredentialAdmin(OrganizationScopedAdmin):
    form = CredentialForm
    edit_role = Role.ADMIN
    list_display = ["name", "organization", "kind", "stored_fields", "connection_state", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    readonly_fields = ["stored_fields", "connection_state", "created_at", "updated_at"]
    list_select_related = ["organization", "connection"]

    # Credentials are for admins and owners only, for reading as well.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._has_role(request, Role.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has_role(request, Role.ADMIN, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Credential]:
        queryset = super().get_queryset(request)
        user = request.user
        if user.is_superuser:
            return queryset
        if not user.is_authenticated:  # the admin lets only staff in; this narrows the type
            return queryset.none()
        return queryset.filter(organization_id__in=organization_ids_for(user, minimum_role=Role.ADMIN))

    def get_readonly_fields(self, request: HttpRequest, obj: Credential | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "organization", "kind"] if obj else fields

    def get_form(
        self, request: HttpRequest, obj: Credential | None = None, change: bool = False, **kwargs: Any
    ) -> type[CredentialForm]:
        kinds = (obj.kind,) if obj else tuple(KINDS)
        kwargs["fields"] = None  # the form's dynamic kind fields are added in __init__
        base = super().get_form(request, obj, change=change, **kwargs)
        # ``base`` is a subclass of ``form`` (CredentialForm) made by modelform_factory.
        return cast(type[CredentialForm], type("ScopedCredentialForm", (base,), {"kinds": kinds}))

    def get_fieldsets(self, request: HttpRequest, obj: Credential | None = None) -> "_FieldsetSpec":
        shown = ["organization", "name", "kind", "stored_fields"]
        if obj and connection_info(obj) is not None:
            shown.append("connection_state")
        head: _FieldOpts = {"fields": [*shown, "created_at", "updated_at"] if obj else ["organization", "name", "kind"]}
        fieldsets: list[tuple[StrOrPromise | None, _FieldOpts]] = [(None, head)]
        kinds = (obj.kind,) if obj else tuple(KINDS)
        for kind in kinds:
            title = CredentialKind(kind).label
            options: _FieldOpts = {
                "fields": [form_field_name(kind, f.name) for f in KINDS[kind].fields],
                # The change form's script shows only the chosen kind's fieldset.
                "classes": ["pf-kind", f"pf-kind-{kind}"],
            }
            if not obj:
                options["description"] = f"Used only when kind is “{title}”."
            fieldsets.append((title, options))
        return fieldsets

    @admin.display(description="Fields")
    def stored_fields(self, obj: Credential) -> str:
        """Public values, and only a 'set' marker for secret ones."""
        if not obj.pk:
            return "-"
        rows = [(k, v) for k, v in obj.public_data.items()]
        rows += [(k, "set" if is_set else "not set") for k, is_set in services.credential_secret_markers(obj).items()]
        return format_html_join(", ", "{}: {}", rows)

    @admin.display(description="Connection")
    def connection_state(self, obj: Credential) -> str:
        """A connection's status, account, scopes and token expiry (its tokens are never shown nor editable:
        they come from Connect on the member credentials page, which also disconnects)."""
        info = connection_info(obj) if obj.pk else None
        if info is None:
            return "-"
        details = [str(ConnectionStatus(info.status).label)]
        if info.account:
            details.append(f"account {info.account}")
        if info.scopes:
            details.append("scopes " + " ".join(info.scopes))
        if info.expires_at:
            details.append(f"token expires {info.expires_at:%Y-%m-%d %H:%M} UTC (refreshed by itself)")
        if info.message:
            details.append(info.message)
        return "; ".join(details)

    def delete_model(self, request: HttpRequest, obj: Credential) -> None:
        credential_delete(obj)  # a connection's tokens are revoked at the provider first, as through the API

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Credential]) -> None:
        for credential in queryset:
            credential_delete(credential)

    def save_model(self, request: HttpRequest, obj: Credential, form: CredentialForm, change: bool) -> None:
        data = getattr(form, "kind_data", {})
        if change:
            saved = services.credential_update(credential=obj, name=obj.name, secret=data)
        else:
            saved = services.credential_create(organization=obj.organization, name=obj.name, kind=obj.kind, secret=data)
        obj.pk = saved.pk
        obj.secret_ciphertext = saved.secret_ciphertext
        obj.public_data = saved.public_data
