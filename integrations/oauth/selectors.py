"""Reads about connections: their status for the API and the pages, and which ones need reconnecting."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from integrations.credential_kinds import KINDS
from integrations.models import Credential

from .models import Connection, ConnectionStatus
from .providers import ConnectionSpec, NotConfigured, redirect_uri
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


def connection_info(credential: Credential) -> ConnectionInfo | None:
    """What may be shown about ``credential`` as a connection; None when it is typed in.

    Reads ``credential.connection`` (load it with ``select_related("connection")``
    for a list: no query per row).
    """
    spec = connection_spec(credential.kind)
    if spec is None:
        return None
    label, help_text, uri = _label(credential), spec.help, redirect_uri()
    try:
        row = credential.connection
    except Connection.DoesNotExist:
        return ConnectionInfo(status=ConnectionStatus.NOT_CONNECTED, label=label, help=help_text, redirect_uri=uri)
    return ConnectionInfo(
        label=label,
        help=help_text,
        redirect_uri=uri,
        status=row.status,
        account=row.account,
        scopes=tuple(row.scopes or ()),
        expires_at=row.expires_at,
        connected_at=row.connected_at,
        refreshed_at=row.refreshed_at,
        problem=row.problem,
    )


def needing_reconnect(credential_ids: Iterable[int | None], organization_id: int) -> dict[int, str]:
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


@dataclass(frozen=True)
class Provider:
    """A *Connect* button: the kind it creates, its label, what to register, and why it is unavailable."""

    kind: str
    label: str
    help: str
    unavailable: str = ""


def connect_buttons() -> list[Provider]:
    """The providers with a *Connect* button (Slack, Google): app credentials set by staff, or why not."""
    buttons = []
    for kind, spec in KINDS.items():
        connection = spec.connection
        if not isinstance(connection, ConnectionSpec) or connection.label is None:
            continue  # typed in, or the generic oauth2 (created with its fields first)
        try:
            connection.config({})
        except NotConfigured as exc:
            buttons.append(Provider(kind, connection.label, connection.help, unavailable=str(exc)))
        else:
            buttons.append(Provider(kind, connection.label, connection.help))
    return buttons


def typed_in_kinds() -> list[tuple[str, str]]:
    """The kinds created with a form (every kind but Slack's and Google's connections, which Connect creates)."""
    return [
        (kind, spec.label)
        for kind, spec in KINDS.items()
        if not (isinstance(spec.connection, ConnectionSpec) and spec.connection.label is not None)
    ]


def connection_counts() -> dict[tuple[str, str], int]:
    """Connections by (kind, status), every pair present (0 when none): ``potaflow_connections``."""
    counts = {
        (kind, status): 0
        for kind, spec in KINDS.items()
        if isinstance(spec.connection, ConnectionSpec)
        for status in ConnectionStatus.values
    }
    rows = (
        Credential.objects.filter(kind__in={kind for kind, _ in counts})
        .order_by()
        .values_list("kind", "connection__status")
        .annotate(n=Count("pk"))
    )
    for kind, status, n in rows:
        counts[(kind, status or ConnectionStatus.NOT_CONNECTED)] += n
    return counts
