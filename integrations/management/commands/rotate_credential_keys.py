from typing import Any

from django.core.management.base import BaseCommand, CommandError

from integrations.crypto import SecretDecryptionError
from integrations.services import credentials_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every credential secret with the first key of POTAFLOW_FERNET_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then remove the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = credentials_rotate_keys()
        except SecretDecryptionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} credential(s) with the first key."))
