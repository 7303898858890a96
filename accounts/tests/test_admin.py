"""The Django admin is organization-scoped for non-superuser staff; another organization's ids are 404."""

import pytest
from django.test import Client

from accounts.models import Membership, Organization, Role, User

from .conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(world):
    """Acme's admin and viewer can log in to the admin; Globex has a member Acme never sees."""
    User.objects.filter(email__in=["admin@example.com", "viewer@example.com"]).update(is_staff=True)
    Membership.objects.create(user=make_user("bob@globex.test"), organization=world.globex, role=Role.EDITOR)
    return world


def admin_client(email: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(email=email))
    return client


def shown(response) -> list:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_staff_sees_only_their_organizations_memberships(staff):
    rows = shown(admin_client("admin@example.com").get("/admin/accounts/membership/"))
    assert {m.organization for m in rows} == {staff.acme}
    assert len(rows) == 4


def test_staff_sees_only_their_organizations_and_colleagues(staff):
    client = admin_client("admin@example.com")
    assert shown(client.get("/admin/accounts/organization/")) == [staff.acme]
    users = {u.email for u in shown(client.get("/admin/accounts/user/"))}
    assert users == {"owner@example.com", "admin@example.com", "editor@example.com", "viewer@example.com"}


def test_another_organizations_objects_are_404(staff):
    client = admin_client("admin@example.com")
    foreign_membership = staff.outsider_membership
    assert client.get(f"/admin/accounts/membership/{foreign_membership.pk}/change/").status_code == 404
    assert client.get(f"/admin/accounts/membership/{foreign_membership.pk}/delete/").status_code == 404
    assert client.get(f"/admin/accounts/organization/{staff.globex.pk}/change/").status_code == 404
    assert client.get(f"/admin/accounts/user/{staff.users['outsider'].pk}/change/").status_code == 404
    # ...while the same pages for their own organization work.
    assert client.get(f"/admin/accounts/membership/{staff.memberships['editor'].pk}/change/").status_code == 200
    assert client.get(f"/admin/accounts/organization/{staff.acme.pk}/change/").status_code == 200


def test_the_organization_filter_lists_only_visible_organizations(staff):
    response = admin_client("admin@example.com").get("/admin/accounts/membership/")
    assert b"Acme" in response.content
    assert b"Globex" not in response.content


def test_staff_cannot_edit_users_shared_with_other_organizations(staff):
    client = admin_client("admin@example.com")
    editor = staff.users["editor"]
    page = client.get(f"/admin/accounts/user/{editor.pk}/change/")
    assert page.status_code == 200
    assert b"argon2" not in page.content and b"Superuser status" not in page.content
    response = client.post(f"/admin/accounts/user/{editor.pk}/change/", {"email": "hijack@example.com"})
    assert response.status_code == 403
    editor.refresh_from_db()
    assert editor.email == "editor@example.com"


def test_an_admin_changes_a_role_through_the_admin(staff):
    membership = staff.memberships["editor"]
    response = admin_client("admin@example.com").post(
        f"/admin/accounts/membership/{membership.pk}/change/", {"role": "viewer", "_save": "Save"}
    )
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


def test_the_admin_follows_the_owner_rules(staff):
    client = admin_client("admin@example.com")
    owner = staff.memberships["owner"]
    response = client.post(f"/admin/accounts/membership/{owner.pk}/change/", {"role": "viewer", "_save": "Save"})
    assert response.status_code == 200  # the form again, with the error
    assert "Only an owner can grant the owner role" in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    assert client.get(f"/admin/accounts/membership/{owner.pk}/delete/").status_code == 403


def test_an_admin_adds_a_member_by_email(staff):
    client = admin_client("admin@example.com")
    newcomer = make_user("newcomer@example.com")
    form = {"email": "NEWCOMER@example.com", "organization": staff.acme.pk, "role": "editor", "_save": "Save"}
    assert client.post("/admin/accounts/membership/add/", form).status_code == 302
    assert Membership.objects.get(user=newcomer, organization=staff.acme).role == Role.EDITOR

    as_owner = client.post("/admin/accounts/membership/add/", {**form, "email": "bob@globex.test", "role": "owner"})
    assert as_owner.status_code == 200
    assert not Membership.objects.filter(user__email="bob@globex.test", organization=staff.acme).exists()

    into_globex = client.post(
        "/admin/accounts/membership/add/", {**form, "email": "bob@globex.test", "organization": staff.globex.pk}
    )
    assert into_globex.status_code == 200  # Globex is not a valid choice for them
    assert not Membership.objects.filter(user__email="bob@globex.test", organization=staff.acme).exists()


def test_a_staff_viewer_may_look_but_not_change(staff):
    client = admin_client("viewer@example.com")
    membership = staff.memberships["editor"]
    assert len(shown(client.get("/admin/accounts/membership/"))) == 4
    response = client.post(f"/admin/accounts/membership/{membership.pk}/change/", {"role": "viewer"})
    assert response.status_code == 403
    membership.refresh_from_db()
    assert membership.role == Role.EDITOR
    assert client.get("/admin/accounts/membership/add/").status_code == 403


def test_staff_without_memberships_sees_nothing(staff):
    make_user("lonely@example.com", is_staff=True)
    client = admin_client("lonely@example.com")
    assert client.get("/admin/accounts/membership/").status_code == 403
    assert client.get("/admin/accounts/user/").status_code == 403


def test_a_superuser_sees_everything(staff):
    make_user("root@example.com", is_staff=True, is_superuser=True)
    client = admin_client("root@example.com")
    assert len(shown(client.get("/admin/accounts/membership/"))) == Membership.objects.count() == 6
    assert set(shown(client.get("/admin/accounts/organization/"))) == set(Organization.objects.all())
