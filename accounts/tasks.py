"""Account tasks: JWT housekeeping (scheduled in settings.CELERY_BEAT_SCHEDULE) and account mail."""

from celery import shared_task

from . import account_mail, services


@shared_task(name="accounts.flush_expired_tokens", ignore_result=True)
def flush_expired_tokens() -> dict[str, int]:
    """simplejwt's ``flushexpiredtokens``, plus token families: the tables would otherwise grow forever."""
    return services.tokens_flush_expired()


@shared_task(
    name="accounts.send_account_mail",
    ignore_result=True,
    autoretry_for=(OSError,),  # an SMTP server that is down or refusing for now (smtplib errors are OSErrors)
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=6,
)
def send_account_mail(kind: str, ref: str) -> str:
    """Build and send one account message from ids (``accounts.account_mail``); returns what was done."""
    return account_mail.send_account_mail(kind, ref)
