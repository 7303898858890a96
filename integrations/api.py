"""Integrations API: credentials (admins and owners; secrets write-only) and the action catalogue.

Secrets go in under ``secret`` and never come back out: responses carry the
non-secret fields (``public``) and, per secret field, whether it is set
(``secret_set``). Views are thin; validation, the rules of an update and
encryption live in ``services`` / ``credential_kinds``, whose
``CredentialInvalid`` ``potaflow.api.exception_handler`` turns into a 400.
"""

from typing import TYPE_CHECKING, Any, cast

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Organization, Role
from accounts.permissions import OrganizationScopedMixin, OrgRole, signed_in
from accounts.selectors import organization_ids_for, organizations_for, sole_organization

from . import registry, services
from .credential_kinds import KINDS
from .models import Credential, CredentialKind
from .oauth.flow import credential_delete
from .oauth.selectors import connection_info

if TYPE_CHECKING:
    _CredentialSerializerBase = serializers.ModelSerializer[Credential]
    _CredentialViewSetBase = viewsets.GenericViewSet[Credential]
else:  # DRF's classes are not subscriptable at run time
    _CredentialSerializerBase = serializers.ModelSerializer
    _CredentialViewSetBase = viewsets.GenericViewSet


class CredentialSerializer(_CredentialSerializerBase):
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.none(), required=False)
    kind = serializers.ChoiceField(choices=CredentialKind.choices)
    secret = serializers.DictField(write_only=True, help_text="The kind's fields (secret and public).")
    public = serializers.JSONField(source="public_data", read_only=True)
    secret_set = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField(
        help_text="A connection's state: not_connected, connected or needs_reconnect (null for a typed-in kind)."
    )
    expires_at = serializers.SerializerMethodField(help_text="When a connection's access token expires, if it does.")
    connection = serializers.SerializerMethodField(help_text="A connection's account, scopes and dates; never a token.")

    class Meta:
        model = Credential
        fields = ["id", "organization", "name", "kind", "secret", "public", "secret_set", "status", "expires_at",
                  "connection", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]
        validators: list[Any] = []  # the unique (organization, name) check happens in the service

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        self.organization_choices: QuerySet[Organization] = Organization.objects.none()
        if request is not None and request.user.is_authenticated:
            self.organization_choices = organizations_for(signed_in(request.user), minimum_role=Role.ADMIN)
        # ``fields`` holds this instance's copies of the declared fields: the organization one is declared above.
        organization = cast("serializers.PrimaryKeyRelatedField[Organization]", self.fields["organization"])
        # The stubs type the attribute as QuerySet | Manager and mypy then reads the Manager as a descriptor.
        organization.queryset = self.organization_choices  # type: ignore[arg-type]  # stubs: Manager as descriptor

    def get_secret_set(self, credential: Credential) -> dict[str, bool]:
        return services.credential_secret_markers(credential)

    def get_status(self, credential: Credential) -> str | None:
        info = connection_info(credential)
        return str(info.status) if info else None

    def get_expires_at(self, credential: Credential) -> str | None:
        info = connection_info(credential)
        return info.expires_at.isoformat() if info and info.expires_at else None

    def get_connection(self, credential: Credential) -> dict[str, Any] | None:
        info = connection_info(credential)
        if info is None:
            return None
        return {
            "provider": info.label,
            "account": info.account,
            "scopes": list(info.scopes),
            "connected_at": info.connected_at.isoformat() if info.connected_at else None,
            "refreshed_at": info.refreshed_at.isoformat() if info.refreshed_at else None,
            "problem": info.message,
            "redirect_uri": info.redirect_uri,
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and "organization" not in attrs:
            attrs["organization"] = sole_organization(self.organization_choices)
            if attrs["organization"] is None:
                raise ValidationError({"organization": ["This field is required (you administer several or none)."]})
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Credential:
        return services.credential_create(
            organization=validated_data["organization"],
            name=validated_data["name"],
            kind=validated_data["kind"],
            secret=validated_data["secret"],
        )

    def update(self, instance: Credential, validated_data: dict[str, Any]) -> Credential:
        return services.credential_update(
            credential=instance,
            name=validated_data.get("name"),
            secret=validated_data.get("secret"),
            organization=validated_data.get("organization"),
            kind=validated_data.get("kind"),
        )


class CredentialViewSet(
    OrganizationScopedMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    _CredentialViewSetBase,
):
    """Credentials of the organizations where the caller is an admin or owner."""

    queryset = Credential.objects.select_related("organization", "connection")
    serializer_class = CredentialSerializer
    permission_classes = [OrgRole(read=Role.ADMIN, write=Role.ADMIN)]
    filterset_fields = ["organization", "kind"]
    ordering_fields = ["name", "created_at"]

    def perform_destroy(self, instance: Credential) -> None:
        credential_delete(instance)

    def get_queryset(self) -> QuerySet[Credential]:
        queryset = super().get_queryset()
        if self.action == "list":
            # Listing shows only what the caller may read; a lower role sees an empty list.
            queryset = queryset.filter(
                organization_id__in=organization_ids_for(signed_in(self.request.user), minimum_role=Role.ADMIN)
            )
        return queryset


class ActionListView(APIView):
    """Every available action type (built-in and plugin) with its config schema and credential kind."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        actions = [action.describe() for _, action in sorted(registry.all_actions().items())]
        kinds = {
            kind: {"secret": list(spec.secret_fields), "public": list(spec.public_fields)}
            for kind, spec in KINDS.items()
        }
        return Response({"actions": actions, "credential_kinds": kinds})
