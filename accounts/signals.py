"""A password change revokes every refresh token (and token family) of the user."""

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from . import services
from .models import User


@receiver(post_save, sender=User, dispatch_uid="accounts.revoke_tokens_on_password_change")
def revoke_tokens_on_password_change(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    """``set_password()`` then ``save()`` (admin, shell, any future API): the old sessions' tokens die.

    ``_password`` holds the new raw password until ``save()`` finishes; a
    rehash on login (``check_password`` upgrading the hasher) clears it first,
    so that does not log anyone out.
    """
    if created or getattr(instance, "_password", None) is None:
        return
    services.user_tokens_revoke(user=instance, reason="password_change")
