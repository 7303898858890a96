"""Reads about connections: their status for the API and the pages, and which ones need reconnecting."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from integrations.models import Credential

from .models import Connection, ConnectionStatus
from .providers import redirect_uri
from .tokens import connection_spec, reconnect_message


@dataclass(frozen=True)
class ConnectionInfo:
    """What may be shown about a connection (never a token)."""

    status: str
    label: str
    account: str = ""
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    connected_at: datetime | None = None
    refreshed_at: datetime | None = None
    problem: str = ""
    help: str = ""
    redirect_uri: str = ""

    @property
    def message(self) -> str:
        """The page's sentence for a connection that needs reconnecting ("" otherwise)."""
        return reconnect_message(self.label, self.problem) if self.status == ConnectionStatus.NEEDS_RECONNECT else ""


def connection_infos(credentials: Iterable[Credential]) -> dict[int, ConnectionInfo]:
    """The connection info of each connection among ``credentials`` (one query), by credential id."""
    wanted = {c.pk: c for c in credentials if connection_spec(c.kind) is not None}
    rows = {row.pk: row for row in Connection.objects.filter(pk__in=list(wanted))}
    infos = {}
    for pk, credential in wanted.items():
        spec = connection_spec(credential.kind)
        label, row = _label(credential), rows.get(pk)
        base = {"label": label, "help": spec.help if spec else "", "redirect_uri": redirect_uri()}
        if row is None:
            infos[pk] = ConnectionInfo(status=ConnectionStatus.NOT_CONNECTED, **base)
            continue
        infos[pk] = ConnectionInfo(
            status=row.status,
            account=row.account,
            scopes=tuple(row.scopes or ()),
            expires_at=row.expires_at,
            connected_at=row.connected_at,
            refreshed_at=row.refreshed_at,
            problem=row.problem,
            **base,
        )
    return infos


def connection_info(credential: Credential) -> ConnectionInfo | None:
    return connection_infos([credential]).get(credential.pk)


def needing_reconnect(credential_ids: Iterable[int], organization_id: int) -> dict[int, str]:
    """Of these credentials (of one organization), those that need reconnecting, with the message to show."""
    ids = [i for i in credential_ids if isinstance(i, int)]
    if not ids:
        return {}
    rows = Connection.objects.filter(
        pk__in=ids, credential__organization_id=organization_id, status=ConnectionStatus.NEEDS_RECONNECT
    ).select_related("credential")
    return {row.pk: reconnect_message(_label(row.credential), row.problem) for row in rows}


def _label(credential: Credential) -> str:
    spec = connection_spec(credential.kind)
    return spec.label_for(credential.name) if spec else credential.name
