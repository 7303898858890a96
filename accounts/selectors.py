"""Reads that scope everything to the organizations a user belongs to."""

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from .models import ROLE_RANK, Membership, Role, User


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
