"""Accounts API: sign-up, JWT, the caller's profile, organizations and their members.

Views are thin: they validate input with a serializer and call ``services``;
the membership rules live there. Django's ``ValidationError`` from a service
becomes a 400 in ``potaflow.api.exception_handler``, ``PermissionDenied`` a 403
(DRF maps it itself).
"""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenBlacklistSerializer,
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.tokens import UntypedToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from . import services
from .login_throttle import LoginThrottled
from .models import Invitation, Membership, Organization, Role, User, normalize_email
from .permissions import OrganizationScopedMixin, OrgRole, signed_in
from .selectors import membership_for, scope_to_user
from .throttles import AuthRateThrottle
from .tokens import FAMILY_CLAIM, FamilyRefreshToken, lock_family, replayed_family


# ---------------------------------------------------------------------------
# Serializers
# ---------------------------------------------------------------------------
class OrganizationBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug"]


class UserBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "full_name"]


class MyMembershipSerializer(serializers.ModelSerializer):
    organization = OrganizationBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "role", "organization"]


class MeSerializer(serializers.ModelSerializer):
    memberships = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "email", "full_name", "is_staff", "date_joined", "memberships"]

    @extend_schema_field(MyMembershipSerializer(many=True))
    def get_memberships(self, user: User) -> list[dict[str, Any]]:
        memberships = user.memberships.select_related("organization").order_by("organization__name")
        # many=True builds a ListSerializer whose data is a list; the stubs type it as one object's ReturnDict.
        return MyMembershipSerializer(memberships, many=True).data  # type: ignore[return-value]  # a list: many=True


class RegisterSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})
    organization = serializers.CharField(max_length=150, help_text="Name of the organization to create.")


REGISTERED = (
    "Registration received. We sent a message to this address: follow its link to confirm the address, "
    "then log in with it and your password."
)


class RegisteredSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text=REGISTERED)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="Short-lived access token: send as 'Authorization: Bearer <access>'.")
    refresh = serializers.CharField(help_text="Refresh token; single use (rotated and blacklisted on refresh).")


class EmailTokenObtainPairSerializer(TokenObtainPairSerializer):
    """simplejwt's pair serializer, but the email matches whatever its case (emails are stored lower-case).

    Each login starts a token family (``accounts.tokens``).
    """

    token_class = FamilyRefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        attrs[self.username_field] = normalize_email(attrs[self.username_field])
        return super().validate(attrs)


class SafeTokenRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh serializer with token families; a token of a deleted user is a 401, not a 500.

    Presenting a refresh token that was already rotated revokes its whole
    family (every token descended from the same login). Rotation holds a lock
    on the family row, so two concurrent uses of one token cannot both succeed:
    the second sees the first's blacklisting and counts as a replay.
    """

    token_class = FamilyRefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            with transaction.atomic():
                family = lock_family(attrs["refresh"])
                data = super().validate(attrs)
                if family is not None:
                    services.token_family_rotated(family=family)
                return data
        except User.DoesNotExist as exc:
            raise AuthenticationFailed("No active account found for the given token.", "no_active_account") from exc
        except TokenError:
            # Outside the rolled-back transaction, so the revocation sticks.
            replayed = replayed_family(attrs["refresh"])
            if replayed:
                services.token_family_revoke(family=replayed, reason="reuse")
            raise


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The caller's role in this organization.")

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "created_at", "role"]
        read_only_fields = ["slug", "created_at"]

    def get_role(self, organization: Organization) -> str | None:
        membership = membership_for(self.context["request"].user, organization.pk)
        return membership.role if membership else None


class MemberSerializer(serializers.ModelSerializer):
    user = UserBriefSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = fields


class MemberInviteSerializer(serializers.Serializer):
    email = serializers.EmailField(help_text="Email of an existing (registered) user.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254, help_text="Any address: the invitation creates the account.")
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.EmailField(source="invited_by.email", read_only=True, default=None, allow_null=True)
    state = serializers.CharField(read_only=True, help_text="pending, accepted, revoked or expired.")

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "state", "invited_by", "created_at", "expires_at", "accepted_at", "revoked_at"]
        read_only_fields = fields


# ---------------------------------------------------------------------------
# Auth views (anonymous; throttled)
# ---------------------------------------------------------------------------
ERROR = OpenApiResponse(
    description='Error: {"detail": "...", "errors": {field: [...]}} (errors is {} when no field is at fault).'
)


class RegisterView(generics.GenericAPIView):
    """Sign up: creates the user and an organization they own.

    A new and an already registered email get the same answer (202 and the
    same body), so the endpoint cannot tell anyone which addresses have an
    account; the new user finds their organization through ``/api/me/``.
    """

    serializer_class = RegisterSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        summary="Register a user and their organization",
        description="The answer is the same whether or not the email was registered before.",
        responses={202: RegisteredSerializer, 400: ERROR, 403: ERROR, 429: ERROR},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.user_register(
            email=data["email"],
            password=data["password"],
            organization_name=data["organization"],
        )
        return Response({"detail": REGISTERED}, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    post=extend_schema(
        summary="Log in: email + password → access and refresh tokens",
        responses={200: TokenPairSerializer, 400: ERROR, 401: ERROR, 429: ERROR},
        auth=[],
    )
)
class TokenView(TokenObtainPairView):
    """Login. Besides the per-address request rate, failed logins are limited per address and per account."""

    serializer_class = EmailTokenObtainPairSerializer
    throttle_classes = [AuthRateThrottle]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except LoginThrottled as exc:
            raise Throttled(wait=exc.wait) from exc


@extend_schema_view(
    post=extend_schema(
        summary="Rotate a refresh token: the old one is blacklisted, reusing it is a 401",
        responses={200: TokenPairSerializer, 400: ERROR, 401: ERROR, 429: ERROR},
        auth=[],
    )
)
class TokenRefreshRotateView(TokenRefreshView):
    serializer_class = SafeTokenRefreshSerializer
    throttle_classes = [AuthRateThrottle]


class LogoutView(generics.GenericAPIView):
    """Blacklist a refresh token. Holding the token is the proof: the access token may have expired."""

    serializer_class = TokenBlacklistSerializer
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        summary="Log out: blacklist the refresh token",
        responses={204: OpenApiResponse(description="Blacklisted."), 400: ERROR, 401: ERROR, 429: ERROR},
        auth=[],
    )
    def get_authenticate_header(self, request: Request) -> str:
        # An invalid token is a 401 (DRF would make it a 403 for a view without authenticators).
        return 'Bearer realm="api"'

    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        # Logging out ends the login: the family's access token stops working too.
        family = UntypedToken(serializer.initial_data["refresh"]).payload.get(FAMILY_CLAIM)
        if family:
            services.token_family_revoke(family=family, reason="logout")
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------------
# The caller, organizations, members
# ---------------------------------------------------------------------------
class MeView(generics.RetrieveAPIView):
    serializer_class = MeSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(summary="The authenticated user and their memberships")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_object(self) -> User:
        return signed_in(self.request.user)


class OrganizationUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=150)


@extend_schema_view(
    list=extend_schema(summary="Organizations I belong to"),
    retrieve=extend_schema(summary="One of my organizations"),
    create=extend_schema(
        summary="Create an organization (the caller becomes its owner)",
        request=OrganizationUpdateSerializer,
        responses={201: OrganizationSerializer, 400: ERROR},
    ),
    partial_update=extend_schema(
        summary="Rename an organization (admins and owners)",
        request=OrganizationUpdateSerializer,
        responses={200: OrganizationSerializer, 400: ERROR, 403: ERROR, 404: ERROR},
    ),
)
class OrganizationViewSet(
    OrganizationScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Organization.objects.all()
    serializer_class = OrganizationSerializer
    permission_classes = [OrgRole(read=Role.VIEWER, write=Role.ADMIN)]
    organization_field = "pk"
    ordering_fields = ["name", "created_at"]

    def create(self, request: Request) -> Response:
        payload = OrganizationUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization = services.organization_create(name=payload.validated_data["name"], owner=signed_in(request.user))
        return Response(self.get_serializer(organization).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        organization = self.get_object()
        payload = OrganizationUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization = services.organization_rename(organization=organization, name=payload.validated_data["name"])
        return Response(self.get_serializer(organization).data)


@extend_schema_view(
    list=extend_schema(summary="Members of an organization (any member may look)"),
    retrieve=extend_schema(summary="One membership"),
    create=extend_schema(
        summary="Invite an existing user by email with a role (admins and owners; owner role: owners only)",
        request=MemberInviteSerializer,
        responses={201: MemberSerializer, 400: ERROR, 403: ERROR, 404: ERROR},
    ),
    partial_update=extend_schema(
        summary="Change a member's role (admins and owners; owners only for anything touching 'owner')",
        request=MemberRoleSerializer,
        responses={200: MemberSerializer, 400: ERROR, 403: ERROR, 404: ERROR},
    ),
    destroy=extend_schema(
        summary="Remove a member, or leave (your own membership); the last owner cannot go",
        responses={204: OpenApiResponse(description="Removed."), 400: ERROR, 403: ERROR, 404: ERROR},
    ),
)
class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Members of one organization. Outsiders get 404 for the organization and everything under it.

    The role rules are in ``accounts.services`` (403 when the caller's role is too low).
    """

    serializer_class = MemberSerializer
    permission_classes = [IsAuthenticated]
    ordering_fields = ["created_at", "role"]

    def get_organization(self) -> Organization:
        if not hasattr(self, "_organization"):
            mine = scope_to_user(Organization.objects.all(), self.request.user, organization_field="pk")
            self._organization = get_object_or_404(mine, pk=self.kwargs["organization_pk"])
        return self._organization

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return Membership.objects.none()
        return Membership.objects.filter(organization=self.get_organization()).select_related("user").order_by("id")

    def create(self, request: Request, organization_pk: int) -> Response:
        organization = self.get_organization()  # an outsider's 404 comes before any validation
        payload = MemberInviteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = services.membership_invite(
            actor=signed_in(request.user),
            organization=organization,
            email=payload.validated_data["email"],
            role=payload.validated_data["role"],
        )
        return Response(self.get_serializer(membership).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, organization_pk: int, pk: str) -> Response:
        membership = self.get_object()
        payload = MemberRoleSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = services.membership_change_role(
            actor=signed_in(request.user),
            membership=membership,
            role=payload.validated_data["role"],
        )
        return Response(self.get_serializer(membership).data)

    def destroy(self, request: Request, organization_pk: int, pk: str) -> Response:
        services.membership_remove(actor=signed_in(request.user), membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="Pending invitations of an organization (admins and owners)"),
    create=extend_schema(
        summary="Invite someone by e-mail with a role (admins and owners; owner role: owners only)",
        description="The address gets a single-use link, valid POTAFLOW_INVITATION_DAYS days, that lands them in the "
        "organization with the role (creating their account when they have none). Inviting an address again "
        "replaces its pending invitation.",
        request=InvitationCreateSerializer,
        responses={201: InvitationSerializer, 400: ERROR, 403: ERROR, 404: ERROR},
    ),
    destroy=extend_schema(
        summary="Revoke a pending invitation (its link stops working)",
        responses={204: OpenApiResponse(description="Revoked."), 403: ERROR, 404: ERROR},
    ),
)
class InvitationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Invitations of one organization. Outsiders get 404; members below admin 403."""

    serializer_class = InvitationSerializer
    permission_classes = [IsAuthenticated]

    def get_organization(self) -> Organization:
        if not hasattr(self, "_organization"):
            mine = scope_to_user(Organization.objects.all(), self.request.user, organization_field="pk")
            self._organization = get_object_or_404(mine, pk=self.kwargs["organization_pk"])
            membership = membership_for(self.request.user, self._organization.pk)
            if membership is None or not membership.has_role(Role.ADMIN):
                raise PermissionDenied("Invitations are managed by the organization's admins and owners.")
        return self._organization

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return Invitation.objects.none()
        return services.invitations_pending(self.get_organization()).select_related("invited_by")

    def create(self, request: Request, organization_pk: int) -> Response:
        organization = self.get_organization()
        payload = InvitationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        invitation = services.invitation_create(
            actor=signed_in(request.user),
            organization=organization,
            email=payload.validated_data["email"],
            role=payload.validated_data["role"],
        )
        return Response(self.get_serializer(invitation).data, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, organization_pk: int, pk: str) -> Response:
        organization = self.get_organization()
        invitation = get_object_or_404(Invitation.objects.filter(organization=organization), pk=pk)
        services.invitation_revoke(actor=signed_in(request.user), invitation=invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)
