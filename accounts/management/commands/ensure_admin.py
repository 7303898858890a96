"""Make sure a newcomer can log in to the admin right after the first ``make run``.

The admin is ``POTAFLOW_ADMIN_EMAIL`` (default ``admin@example.com``):

- ``POTAFLOW_ADMIN_PASSWORD`` set: the user is created with it, or an existing
  user's password is brought in line with it (the environment is the truth).
- not set, and no superuser exists yet: a password is generated and printed
  ONCE. It is stored only as an Argon2 hash, so it cannot be printed again;
  lost, it is reset with ``manage.py changepassword <email>`` or by setting
  ``POTAFLOW_ADMIN_PASSWORD``.
- not set, and a superuser already exists: nothing is created or printed.

The admin also gets an organization ("Default", owner) when it belongs to
none, so the organization-scoped admin and API are usable at once.
Idempotent: ``make run`` calls it on every start.
"""

import secrets

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership, User
from accounts.services import organization_create

DEFAULT_ORGANIZATION_NAME = "Default"


class Command(BaseCommand):
    help = "Create the admin user from POTAFLOW_ADMIN_EMAIL/POTAFLOW_ADMIN_PASSWORD (or generate a password once)."

    def handle(self, *args, **options) -> None:
        email = User.objects.normalize_email(settings.POTAFLOW_ADMIN_EMAIL.strip()).lower()
        password = settings.POTAFLOW_ADMIN_PASSWORD
        with transaction.atomic():
            user = User.objects.filter(email__iexact=email).first()
            if user is None:
                existing = User.objects.filter(is_superuser=True).order_by("pk").first()
                if existing is not None and not password:
                    self.stdout.write(
                        f"Admin user: {existing.email} (exists; POTAFLOW_ADMIN_EMAIL={email} not created)"
                    )
                    user = existing
                else:
                    user = self._create(email=email, password=password)
            elif password:
                self._sync_password(user=user, password=password)
            else:
                self.stdout.write(
                    f"Admin user: {user.email} (exists; a new password: "
                    f".venv/bin/python manage.py changepassword {user.email})"
                )
            if user.is_superuser and not Membership.objects.filter(user=user).exists():
                organization = organization_create(name=DEFAULT_ORGANIZATION_NAME, owner=user)
                self.stdout.write(f"Organization {organization.name!r} created with {user.email} as owner.")

    def _create(self, *, email: str, password: str) -> User:
        generated = not password
        if generated:
            password = secrets.token_urlsafe(15)
        else:
            self._warn_if_weak(email=email, password=password)
        user = User.objects.create_superuser(email=email, password=password)
        if generated:
            line = "=" * 72
            self.stdout.write(
                self.style.WARNING(
                    f"\n{line}\n"
                    f"  Admin user created: {email}\n"
                    f"  Generated password: {password}\n"
                    "  It is shown only this once. Write it down (or set POTAFLOW_ADMIN_PASSWORD;\n"
                    f"  `python manage.py changepassword {email}` resets it).\n"
                    f"{line}\n"
                )
            )
        else:
            self.stdout.write(f"Admin user created: {email} (password from POTAFLOW_ADMIN_PASSWORD)")
        return user

    def _sync_password(self, *, user: User, password: str) -> None:
        if user.check_password(password):
            self.stdout.write(
                f"Admin user: {user.email} (exists; a new password: "
                f".venv/bin/python manage.py changepassword {user.email})"
            )
            return
        self._warn_if_weak(email=user.email, password=password)
        user.set_password(password)
        user.save(update_fields=["password"])
        self.stdout.write(f"Admin user: {user.email} (password updated from POTAFLOW_ADMIN_PASSWORD)")

    def _warn_if_weak(self, *, email: str, password: str) -> None:
        # The operator chose this password explicitly: warn, do not refuse.
        try:
            validate_password(password, user=User(email=email))
        except ValidationError as exc:
            self.stderr.write(self.style.WARNING("POTAFLOW_ADMIN_PASSWORD is weak: " + " ".join(exc.messages)))
