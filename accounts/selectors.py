"""Reads that scope everything to the organizations a user belongs to."""

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from .models import ROLE_RANK, Membership, Organization, Role, User


def roles_at_least(minimum: str) -> list[str]:
    return [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role(minimum)]]


def organization_ids_for(user: User, *, minimum_role: str = Role.VIEWER) -> QuerySet:
    """Ids of the organizations where ``user`` holds at least ``minimum_role``."""
    return Membership.objects.filter(user=user, role__in=roles_at_least(minimum_role)).values("organization_id")


def scope_to_user(
    queryset: QuerySet, user: User | AnonymousUser, *, organization_field: str = "organization"
) -> QuerySet:
    """Restrict ``queryset`` to objects of the user's organizations.

    The one place that decides tenancy for reads: an object of another
    organization is simply absent, so a foreign id is a 404, never a 403.
    """
    if not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{f"{organization_field}__in": organization_ids_for(user)})


def membership_for(user: User | AnonymousUser, organization_id: int) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, organization_id=organization_id).first()


def organization_id_of(obj: Any, organization_field: str = "organization") -> int | None:
    """The organization id of ``obj``, following ``organization_field`` (``"workflow__organization"``)."""
    target = obj
    for part in organization_field.split("__"):
        target = getattr(target, part, None)
        if target is None:
            return None
    return getattr(target, "pk", target)


def organizations_for(user: User, *, minimum_role: str = Role.VIEWER) -> QuerySet:
    """The organizations where ``user`` holds at least ``minimum_role``."""
    return Organization.objects.filter(pk__in=organization_ids_for(user, minimum_role=minimum_role))


def sole_organization(organizations: QuerySet) -> Organization | None:
    """The one organization in ``organizations``, or None when there are several or none.

    "Default to the only organization": what the API (workflows, credentials)
    and the admin's add pages use when the caller does not name one.
    """
    choices = list(organizations.order_by("pk")[:2])
    return choices[0] if len(choices) == 1 else None


def colleagues_of(user: User) -> QuerySet:
    """The users who share an organization with ``user`` (``user`` included)."""
    members = Membership.objects.filter(organization_id__in=organization_ids_for(user))
    return User.objects.filter(pk__in=members.values("user_id"))
