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
Idempotent: ``make run`` calls it on every start. The writes are
``accounts.services.admin_ensure``; this command says what it did.
"""

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import admin_ensure

DEFAULT_ORGANIZATION_NAME = "Default"


class Command(BaseCommand):
    help = "Create the admin user from POTAFLOW_ADMIN_EMAIL/POTAFLOW_ADMIN_PASSWORD (or generate a password once)."

    def handle(self, *args, **options) -> None:
        result = admin_ensure(
            email=settings.POTAFLOW_ADMIN_EMAIL,
            password=settings.POTAFLOW_ADMIN_PASSWORD,
            organization_name=DEFAULT_ORGANIZATION_NAME,
        )
        user = result.user
        if result.weak_password:
            # The operator chose this password explicitly: warn, do not refuse.
            warning = "POTAFLOW_ADMIN_PASSWORD is weak: " + " ".join(result.weak_password)
            self.stderr.write(self.style.WARNING(warning))
        if result.outcome == "other_superuser":
            self.stdout.write(f"Admin user: {user.email} (exists; POTAFLOW_ADMIN_EMAIL={result.email} not created)")
        elif result.outcome == "created" and result.generated_password:
            line = "=" * 72
            self.stdout.write(
                self.style.WARNING(
                    f"\n{line}\n"
                    f"  Admin user created: {user.email}\n"
                    f"  Generated password: {result.generated_password}\n"
                    "  It is shown only this once. Write it down (or set POTAFLOW_ADMIN_PASSWORD;\n"
                    f"  `python manage.py changepassword {user.email}` resets it).\n"
                    f"{line}\n"
                )
            )
        elif result.outcome == "created":
            self.stdout.write(f"Admin user created: {user.email} (password from POTAFLOW_ADMIN_PASSWORD)")
        elif result.outcome == "password_updated":
            self.stdout.write(f"Admin user: {user.email} (password updated from POTAFLOW_ADMIN_PASSWORD)")
        else:
            self.stdout.write(
                f"Admin user: {user.email} (exists; a new password: "
                f".venv/bin/python manage.py changepassword {user.email})"
            )
        if result.organization is not None:
            self.stdout.write(f"Organization {result.organization.name!r} created with {user.email} as owner.")
