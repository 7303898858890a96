"""Reusable DRF permissions: "<role> and above of the object's organization".

Usage in a viewset, one line::

    class WorkflowViewSet(OrganizationScopedMixin, viewsets.ModelViewSet):
        permission_classes = [OrgRole(read=Role.VIEWER, write=Role.EDITOR)]

``OrganizationScopedMixin.get_queryset`` hides other organizations' objects
(404), and ``OrgRole`` checks the caller's role in the object's organization.
"""

from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission

from .models import Role, User
from .selectors import membership_for, organization_id_of, scope_to_user


def signed_in(user: User | AnonymousUser) -> User:
    """The user of a request that passed authentication, as the ``User`` services act for.

    For code behind ``IsAuthenticated``, ``OrgRole`` or the admin's staff
    check, where an anonymous user never arrives; should one arrive, it is
    refused (403) rather than acted for.
    """
    if not isinstance(user, User):
        raise PermissionDenied
    return user


def OrgRole(*, read: str = Role.VIEWER, write: str = Role.EDITOR) -> type[BasePermission]:  # noqa: N802
    """Build a permission class: ``read`` role for safe methods, ``write`` for the rest."""

    class _OrgRole(BasePermission):
        message = f"This needs the {write} role (or {read} to read) in the organization."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated)

        def has_object_permission(self, request, view, obj) -> bool:
            field = getattr(view, "organization_field", "organization")
            organization_id = organization_id_of(obj, field)
            if organization_id is None:  # not in any organization: nobody's role covers it
                return False
            membership = membership_for(request.user, organization_id)
            if membership is None:
                return False
            needed = read if request.method in SAFE_METHODS else write
            return membership.has_role(needed)

    _OrgRole.__name__ = f"OrgRole_{read}_{write}"
    return _OrgRole


if TYPE_CHECKING:
    # What the mixin is mixed into (super().get_queryset(), self.request); a plain class at run time.
    from rest_framework.generics import GenericAPIView

    _ViewBase = GenericAPIView[Any]
else:
    _ViewBase = object


class OrganizationScopedMixin(_ViewBase):
    """For viewsets: the queryset only ever holds the caller's organizations' objects."""

    organization_field = "organization"

    def get_queryset(self) -> QuerySet[Any]:
        return scope_to_user(super().get_queryset(), self.request.user, organization_field=self.organization_field)
