"""Admin for users, organizations and memberships, scoped for non-superuser staff.

Users are global (one person may belong to several organizations), so a
non-superuser staff member may only *look* at users who share an organization
with them; changing a user's email, password or flags is for superusers, since
it would affect that person's other organizations too. Organizations and
memberships use ``OrganizationScopedAdmin``; membership changes go through
``accounts.services`` so the admin obeys the same rules as the API (admins
manage members, only owners touch the owner role, at least one owner stays).
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist import models as blacklist_models

from . import services
from .admin_login import ThrottledAdminAuthenticationForm
from .admin_mixins import OrganizationScopedAdmin
from .models import Membership, Organization, Role, User, normalize_email
from .permissions import signed_in
from .selectors import colleagues_of


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------
class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = normalize_email(self.cleaned_data["email"])
        if User.objects.filter(email__iexact=email).exists():
            raise ValidationError("A user with this email already exists.")
        return email

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        # An operator vouches for the address of a user they create (self sign-ups confirm it by mail).
        user.email_verified_at = timezone.now()
        if commit:
            user.save()
        return user


class UserChangeForm(DjangoUserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("full_name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined", "email_verified_at")}),
    )
    # What a non-superuser staff member sees (read-only): no password hash, no permission details.
    scoped_fieldsets = (
        (None, {"fields": ("email", "full_name", "is_active", "is_staff")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "usable_password", "password1", "password2")}),)
    list_display = ("email", "full_name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "full_name")
    ordering = ("email",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=colleagues_of(signed_in(request.user)).values("pk"))

    def get_fieldsets(self, request: HttpRequest, obj: Model | None = None) -> Any:
        if obj is not None and not request.user.is_superuser:
            return self.scoped_fieldsets
        return super().get_fieldsets(request, obj)

    def _is_member_staff(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and Membership.objects.filter(user=user).exists())

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or self._is_member_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser or self._is_member_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        raise Http404(f"No {opts.verbose_name} with id {object_id!r}.")


# ---------------------------------------------------------------------------
# Organizations
# ---------------------------------------------------------------------------
@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_field = "pk"
    edit_role = Role.ADMIN
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("created_at",)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Model | None = None) -> dict:
        return {"slug": ("name",)} if obj is None else {}

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        # The slug is an identifier others may rely on: only superusers change it.
        if obj is not None and not request.user.is_superuser:
            return ("slug", "created_at")
        return self.readonly_fields

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # A non-superuser creates organizations through the API, which makes them owner.
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser or self._has_role(request, Role.OWNER, obj)


# ---------------------------------------------------------------------------
# Memberships
# ---------------------------------------------------------------------------
class MembershipAdminForm(forms.ModelForm):
    """Adding takes an email (an existing user), never a list of every user on the instance."""

    email = forms.EmailField(required=False, help_text="Email of an existing user to add.")
    request: HttpRequest  # set per request by MembershipAdmin.get_form

    class Meta:
        model = Membership
        fields = ("organization", "role")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        adding = self.instance.pk is None
        organization = cleaned.get("organization") if adding else self.instance.organization
        role = cleaned.get("role")
        if organization is None or role is None:
            return cleaned
        try:
            services.membership_check(
                actor=signed_in(self.request.user),
                organization=organization,
                current_role=None if adding else self.instance.role,
                new_role=role,
            )
            if adding:
                if not cleaned.get("email"):
                    raise ValidationError({"email": ["Enter the email of the user to add."]})
                cleaned["user"] = services.membership_invitee(organization=organization, email=cleaned["email"])
            else:
                services.membership_check_keeps_owner(membership=self.instance, new_role=role)
        except PermissionDenied as exc:
            raise ValidationError(str(exc) or "You may not make this change.") from exc
        return cleaned


@admin.register(Membership)
class MembershipAdmin(OrganizationScopedAdmin):
    edit_role = Role.ADMIN
    form = MembershipAdminForm
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__email", "organization__name")
    list_select_related = ("user", "organization")

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        if obj is None:
            return ("email", "organization", "role")
        return ("user", "organization", "role", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        return ("user", "organization", "created_at") if obj is not None else ()

    def get_form(self, request: HttpRequest, obj: Model | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request": request})

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        if not isinstance(obj, Membership):  # None: the changelist asks whether any may be deleted
            return True
        try:
            if obj.user_id != request.user.pk:
                services.membership_check(
                    actor=signed_in(request.user), organization=obj.organization, current_role=obj.role, new_role=None
                )
            services.membership_check_keeps_owner(membership=obj, new_role=None)
        except (PermissionDenied, ValidationError):
            return False
        return True

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        if change:
            updated = services.membership_change_role(actor=signed_in(request.user), membership=obj, role=obj.role)
        else:
            updated = services.membership_invite(
                actor=signed_in(request.user),
                organization=obj.organization,
                email=form.cleaned_data["email"],
                role=obj.role,
            )
        obj.pk = updated.pk
        obj.user = updated.user

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.membership_remove(actor=signed_in(request.user), membership=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for membership in queryset.select_related("user", "organization"):
            try:
                services.membership_remove(actor=signed_in(request.user), membership=membership)
            except (PermissionDenied, ValidationError) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{membership} was kept: {message}", messages.ERROR)


# The JWT blacklist is simplejwt's bookkeeping for refresh rotation (rotation
# and logout write it); editing it by hand only breaks or hides that.
for _model in (blacklist_models.OutstandingToken, blacklist_models.BlacklistedToken):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)

# The admin login goes through the login throttle like the API's (see accounts.admin_login).
admin.site.login_form = ThrottledAdminAuthenticationForm
