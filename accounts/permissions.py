"""Reusable DRF permissions: "<role> and above of the object's organization".

Usage in a viewset, one line::

    class WorkflowViewSet(OrganizationScopedMixin, viewsets.ModelViewSet):
        permission_classes = [OrgRole(read=Role.VIEWER, write=Role.EDITOR)]

``OrganizationScopedMixin.get_queryset`` hides other organizations' objects
(404), and ``OrgRole`` checks the caller's role in the object's organization.
"""

from django.db.models import QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission

from .models import Role
from .selectors import membership_for, organization_id_of, scope_to_user


def OrgRole(*, read: str = Role.VIEWER, write: str = Role.EDITOR) -> type[BasePermission]:  # noqa: N802
    """Build a permission class: ``read`` role for safe methods, ``write`` for the rest."""

    class _OrgRole(BasePermission):
        message = f"This needs the {write} role (or {read} to read) in the organization."

        def has_permission(self, request, view) -> bool:
            return bool(request.user and request.user.is_authenticated)

        def has_object_permission(self, request, view, obj) -> bool:
            field = getattr(view, "organization_field", "organization")
            membership = membership_for(request.user, organization_id_of(obj, field))
            if membership is None:
                return False
            needed = read if request.method in SAFE_METHODS else write
            return membership.has_role(needed)

    _OrgRole.__name__ = f"OrgRole_{read}_{write}"
    return _OrgRole


class OrganizationScopedMixin:
    """For viewsets: the queryset only ever holds the caller's organizations' objects."""

    organization_field = "organization"

    def get_queryset(self) -> QuerySet:
        return scope_to_user(super().get_queryset(), self.request.user, organization_field=self.organization_field)
