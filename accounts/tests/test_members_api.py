"""Role matrix for organizations and their members, with personas (owner, admin, editor, viewer, outsider).

Rules under test (accounts.services): any member may list; owners and admins
manage; only an owner touches the owner role; at least one owner stays;
anyone may leave; another organization's ids are 404.
"""

import pytest

from accounts.models import Membership, Role

from .conftest import make_user

pytestmark = pytest.mark.django_db


def members_url(world, organization=None):
    return f"/api/organizations/{(organization or world.acme).pk}/members/"


def member_url(world, membership, organization=None):
    return f"{members_url(world, organization)}{membership.pk}/"


# -- listing ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("persona", "status"), [("owner", 200), ("admin", 200), ("editor", 200), ("viewer", 200), ("outsider", 404)]
)
def test_who_may_list_members(world, persona, status):
    response = world.client(persona).get(members_url(world))
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert body["count"] == 4
        assert {(m["user"]["email"], m["role"]) for m in body["results"]} == {
            ("owner@example.com", "owner"),
            ("admin@example.com", "admin"),
            ("editor@example.com", "editor"),
            ("viewer@example.com", "viewer"),
        }
    else:
        assert response.json() == {"detail": "No Organization matches the given query.", "errors": {}}


def test_anonymous_callers_are_401(world, api):
    assert api.get(members_url(world)).status_code == 401
    assert api.get("/api/organizations/").status_code == 401


# -- inviting -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("persona", "role", "status"),
    [
        ("owner", "editor", 201),
        ("admin", "editor", 201),
        ("admin", "admin", 201),
        ("editor", "viewer", 403),
        ("viewer", "viewer", 403),
        ("outsider", "viewer", 404),
        ("owner", "owner", 201),
        ("admin", "owner", 403),
    ],
)
def test_who_may_invite_with_which_role(world, persona, role, status):
    newcomer = make_user("newcomer@example.com")
    response = world.client(persona).post(members_url(world), {"email": "NewComer@example.com", "role": role})
    assert response.status_code == status, response.json()
    created = Membership.objects.filter(user=newcomer, organization=world.acme)
    if status == 201:
        assert response.json()["user"]["email"] == "newcomer@example.com"
        assert response.json()["role"] == role
        assert created.get().role == role
    else:
        assert not created.exists()


def test_inviting_an_unknown_email_or_an_existing_member_is_a_400(world):
    owner = world.client("owner")
    unknown = owner.post(members_url(world), {"email": "nobody@example.com", "role": "viewer"})
    assert unknown.status_code == 400
    assert unknown.json()["errors"]["email"] == [
        "No active user with this email: invite them by e-mail instead (an invitation creates the account)."
    ]
    again = owner.post(members_url(world), {"email": "editor@example.com", "role": "viewer"})
    assert again.status_code == 400
    assert again.json()["errors"]["email"] == ["This user is already a member of the organization."]
    bad_role = owner.post(members_url(world), {"email": "outsider@example.com", "role": "god"})
    assert bad_role.status_code == 400
    assert bad_role.json()["detail"] == 'role: "god" is not a valid choice.'


# -- changing roles -------------------------------------------------------------
@pytest.mark.parametrize(
    ("persona", "target", "role", "status"),
    [
        ("owner", "editor", "viewer", 200),
        ("admin", "editor", "viewer", 200),
        ("admin", "viewer", "admin", 200),
        ("editor", "viewer", "editor", 403),
        ("viewer", "editor", "viewer", 403),
        ("outsider", "editor", "viewer", 404),
        ("owner", "admin", "owner", 200),
        ("admin", "editor", "owner", 403),
        ("admin", "owner", "viewer", 403),
        ("editor", "editor", "admin", 403),  # no self-promotion
    ],
)
def test_who_may_change_which_role(world, persona, target, role, status):
    membership = world.memberships[target]
    response = world.client(persona).patch(member_url(world, membership), {"role": role})
    assert response.status_code == status, response.json()
    membership.refresh_from_db()
    assert membership.role == (role if status == 200 else target)


def test_forbidden_changes_say_why(world):
    by_editor = world.client("editor").patch(member_url(world, world.memberships["viewer"]), {"role": "editor"})
    assert by_editor.json() == {"detail": "Only owners and admins can manage members.", "errors": {}}
    by_admin = world.client("admin").patch(member_url(world, world.memberships["editor"]), {"role": "owner"})
    assert by_admin.json() == {
        "detail": "Only an owner can grant the owner role or change an owner's membership.",
        "errors": {},
    }


def test_the_last_owner_cannot_be_demoted_until_there_is_another(world):
    owner = world.client("owner")
    own = world.memberships["owner"]
    response = owner.patch(member_url(world, own), {"role": "admin"})
    assert response.status_code == 400
    assert response.json()["errors"]["role"] == [
        "An organization must keep at least one owner; make someone else owner first."
    ]
    assert owner.patch(member_url(world, world.memberships["admin"]), {"role": "owner"}).status_code == 200
    assert owner.patch(member_url(world, own), {"role": "admin"}).status_code == 200
    assert list(Membership.objects.filter(organization=world.acme, role=Role.OWNER)) == [world.memberships["admin"]]


# -- removing -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("persona", "target", "status"),
    [
        ("owner", "editor", 204),
        ("admin", "editor", 204),
        ("admin", "owner", 403),
        ("editor", "viewer", 403),
        ("viewer", "editor", 403),
        ("outsider", "viewer", 404),
        ("viewer", "viewer", 204),  # leaving
        ("editor", "editor", 204),  # leaving
        ("owner", "owner", 400),  # the last owner cannot leave
    ],
)
def test_who_may_remove_whom(world, persona, target, status):
    membership = world.memberships[target]
    response = world.client(persona).delete(member_url(world, membership))
    assert response.status_code == status
    assert Membership.objects.filter(pk=membership.pk).exists() == (status != 204)


def test_an_owner_may_remove_another_owner_but_not_the_last(world):
    second = Membership.objects.create(user=make_user("second@example.com"), organization=world.acme, role="owner")
    owner = world.client("owner")
    assert owner.delete(member_url(world, second)).status_code == 204
    response = owner.delete(member_url(world, world.memberships["owner"]))
    assert response.status_code == 400
    assert "at least one owner" in response.json()["detail"]


# -- cross-organization ---------------------------------------------------------
def test_another_organizations_membership_is_404_even_under_my_organization(world):
    foreign = world.outsider_membership
    owner = world.client("owner")
    for url in (member_url(world, foreign), member_url(world, foreign, world.globex)):
        assert owner.get(url).status_code == 404
        assert owner.patch(url, {"role": "viewer"}).status_code == 404
        assert owner.delete(url).status_code == 404
    assert owner.get(members_url(world, world.globex)).status_code == 404
    assert owner.post(members_url(world, world.globex), {"email": "owner@example.com"}).status_code == 404
    foreign.refresh_from_db()
    assert foreign.role == Role.OWNER


def test_retrieve_one_membership(world):
    response = world.client("viewer").get(member_url(world, world.memberships["editor"]))
    assert response.status_code == 200
    assert response.json()["user"]["email"] == "editor@example.com"
    assert response.json()["role"] == "editor"


# -- organizations --------------------------------------------------------------
def test_organizations_lists_only_mine_with_my_role(world):
    body = world.client("editor").get("/api/organizations/").json()
    assert [(o["name"], o["role"]) for o in body["results"]] == [("Acme", "editor")]
    assert world.client("editor").get(f"/api/organizations/{world.globex.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("persona", "status"), [("owner", 200), ("admin", 200), ("editor", 403), ("viewer", 403), ("outsider", 404)]
)
def test_who_may_rename_an_organization(world, persona, status):
    response = world.client(persona).patch(f"/api/organizations/{world.acme.pk}/", {"name": "Acme Corp"})
    assert response.status_code == status
    world.acme.refresh_from_db()
    assert world.acme.name == ("Acme Corp" if status == 200 else "Acme")
    assert world.acme.slug == "acme"


def test_creating_an_organization_makes_me_its_owner(world):
    response = world.client("viewer").post("/api/organizations/", {"name": "Side Project"})
    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(organization_id=response.json()["id"]).user == world.users["viewer"]
    assert world.client("viewer").post("/api/organizations/", {"name": "   "}).status_code == 400
