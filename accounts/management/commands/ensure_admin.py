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

``--signin-file PATH`` (what ``make run`` passes): the sign-in summary — with the
generated password, the one time there is one — goes to that file (mode 0600)
instead of the terminal; ``make run`` prints it last, once web, worker and beat
are up (the worker's start-up lines would otherwise push it off the screen), and
deletes it.
"""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import admin_ensure

DEFAULT_ORGANIZATION_NAME = "Default"


class Command(BaseCommand):
    help = "Create the admin user from POTAFLOW_ADMIN_EMAIL/POTAFLOW_ADMIN_PASSWORD (or generate a password once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--signin-file", help="Write the sign-in summary to this file (0600) instead of stdout.")

    def handle(self, *args, **options) -> None:
        signin_file = options.get("signin_file")
        if signin_file:
            self._announce_later(Path(signin_file))
            return
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

    def _announce_later(self, path: Path) -> None:
        result = admin_ensure(
            email=settings.POTAFLOW_ADMIN_EMAIL,
            password=settings.POTAFLOW_ADMIN_PASSWORD,
            organization_name=DEFAULT_ORGANIZATION_NAME,
        )
        email = result.user.email
        if result.weak_password:
            self.stderr.write(self.style.WARNING("POTAFLOW_ADMIN_PASSWORD is weak: " + " ".join(result.weak_password)))
        if result.generated_password:
            lines = [
                f"Admin (staff) sign-in:  {email}",
                f"Generated password: {result.generated_password}",
                "It is shown only this once: write it down (or set POTAFLOW_ADMIN_PASSWORD;",
                f"`.venv/bin/python manage.py changepassword {email}` sets a new one).",
            ]
        else:
            source = (
                "POTAFLOW_ADMIN_PASSWORD" if settings.POTAFLOW_ADMIN_PASSWORD else "the one printed on the first run"
            )
            lines = [
                f"Admin (staff) sign-in:  {email}   password: {source}",
                f"Lost it? `.venv/bin/python manage.py changepassword {email}`",
            ]
        if result.organization is not None:
            lines.append(f"Organization {result.organization.name!r} created with {email} as owner.")
        # Only the owner reads it: it may hold the generated password until make run has printed it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write("\n".join(lines) + "\n")
        self.stdout.write(f"Admin user: {email} (the sign-in is printed once web, worker and beat are up)")
