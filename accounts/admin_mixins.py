"""Organization scoping for the Django admin (the management UI).

Superusers see everything. A staff member sees only objects of organizations
they belong to; viewers may look, editors and above (``edit_role``) may change.
An object of another organization is a 404, exactly as in the API.
"""

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from .models import Membership, Organization, Role
from .permissions import signed_in
from .selectors import organization_id_of, roles_at_least, scope_to_user, sole_organization

if TYPE_CHECKING:
    # What the mixins are mixed into (their super() calls, admin_site, parent_model); plain classes at run time.
    from django.contrib.admin.options import InlineModelAdmin

    _AdminBase = admin.ModelAdmin[Any]
    _InlineBase = InlineModelAdmin[Any, Any]
else:
    _AdminBase = object
    _InlineBase = object


class OrganizationScopedAdminMixin(_AdminBase):
    organization_field = "organization"
    edit_role: str = Role.EDITOR

    # -- helpers -----------------------------------------------------------
    def _has_role(self, request: HttpRequest, minimum: str, obj: Model | None = None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        memberships = Membership.objects.filter(user=user, role__in=roles_at_least(minimum))
        if obj is not None:
            organization_id = organization_id_of(obj, self.organization_field)
            if organization_id is None:  # an object outside any organization: no membership covers it
                return False
            memberships = memberships.filter(organization_id=organization_id)
        return memberships.exists()

    def editable_organizations(self, request: HttpRequest) -> QuerySet:
        if request.user.is_superuser:
            return Organization.objects.all()
        return Organization.objects.filter(
            memberships__user=signed_in(request.user), memberships__role__in=roles_at_least(self.edit_role)
        )

    # -- ModelAdmin hooks --------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return scope_to_user(queryset, request.user, organization_field=self.organization_field)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._has_role(request, Role.VIEWER)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has_role(request, Role.VIEWER, obj)

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return self._has_role(request, self.edit_role)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has_role(request, self.edit_role, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._has_role(request, self.edit_role, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == self.organization_field and db_field.related_model is Organization:
            kwargs["queryset"] = self.editable_organizations(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Preselect the organization on an add page when the user can pick exactly one."""
        initial: dict[str, Any] = super().get_changeform_initial_data(request)
        if self.organization_field == "organization" and "organization" not in initial:
            only = sole_organization(self.editable_organizations(request))
            if only is not None:
                initial["organization"] = only.pk
        return initial

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index for a missing object; for another
        # organization's id that would confirm nothing, but a plain 404 is
        # what the API answers too, and what the tests pin.
        raise Http404(f"No {opts.verbose_name} with id {object_id!r}.")


class OrganizationScopedAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    pass


class ParentPermissionsInlineMixin(_InlineBase):
    """Inline permissions follow the parent admin's organization role checks."""

    def _parent_admin(self) -> OrganizationScopedAdminMixin:
        # The inlines with this mixin sit on organization-scoped admins (it is what they defer to).
        return cast(OrganizationScopedAdminMixin, self.admin_site._registry[self.parent_model])

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent_admin().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        parent = self._parent_admin()
        return parent.has_change_permission(request, obj) if obj else parent.has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.has_add_permission(request, obj)
