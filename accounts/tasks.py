"""Periodic housekeeping of the JWT tables (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from . import services


@shared_task(name="accounts.flush_expired_tokens", ignore_result=True)
def flush_expired_tokens() -> dict[str, int]:
    """simplejwt's ``flushexpiredtokens``, plus token families: the tables would otherwise grow forever."""
    return services.tokens_flush_expired()
