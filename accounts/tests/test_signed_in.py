"""accounts.permissions.signed_in: the user services act for, never an anonymous one."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied

from accounts.permissions import signed_in


def test_a_signed_in_user_is_returned_as_is(world):
    owner = world.users["owner"]
    assert signed_in(owner) is owner


def test_an_anonymous_user_is_refused_not_acted_for():
    with pytest.raises(PermissionDenied):
        signed_in(AnonymousUser())
