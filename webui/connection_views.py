"""Member pages for connections: Connect (new or again), the provider's redirect back, Disconnect.

Thin: the rules (state, PKCE, who may finish a Connect, what is saved) live in
``integrations.oauth.flow``. Starting and ending a connection is for admins
and owners of the credential's organization (others: 403; another
organization's credential: 404). The redirect back lands on
``/oauth/callback/`` (``POTAFLOW_BASE_URL`` + that path is what an admin
registers at the provider) and ends on the credentials page with one
sentence saying what happened.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Membership, Role
from integrations.models import Credential
from integrations.oauth import flow
from integrations.oauth.tokens import connection_spec

from . import selectors
from .org_views import _actor


def _credentials_page(organization_id: int | None) -> HttpResponse:
    suffix = f"?org={organization_id}" if organization_id else ""
    return redirect(reverse("webui:credentials") + suffix)


def _admin_of(request: HttpRequest, organization_id: int) -> Membership:
    membership = selectors.membership_in(request.user, organization_id)  # else 404
    if not membership.has_role(Role.ADMIN):
        raise PermissionDenied("Connections are managed by the organization's admins and owners.")
    return membership


def _start(request: HttpRequest, membership: Membership, kind: str, credential: Credential | None) -> HttpResponse:
    try:
        url = flow.connect_start(
            user=_actor(request), organization=membership.organization, kind=kind, credential=credential
        )
    except flow.ConnectRefused as exc:
        messages.error(request, str(exc))
        return _credentials_page(membership.organization_id)
    return HttpResponseRedirect(url)


@require_GET
@login_required
def connect_new(request: HttpRequest, kind: str) -> HttpResponse:
    """*Connect Slack* / *Connect Google*: a new connection of the current organization (saved on success only)."""
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    if connection_spec(kind) is None or kind == "oauth2":
        raise Http404("No such provider.")
    _admin_of(request, membership.organization_id)
    return _start(request, membership, kind, None)


@require_GET
@login_required
def connect(request: HttpRequest, pk: int) -> HttpResponse:
    """Connect (or reconnect: same id) an existing connection credential."""
    credential = Credential.objects.select_related("organization").filter(pk=pk).first()
    if credential is None:
        raise Http404("No such credential in your organizations.")
    membership = _admin_of(request, credential.organization_id)
    if connection_spec(credential.kind) is None:
        raise Http404("This credential is typed in, not connected.")
    return _start(request, membership, credential.kind, credential)


@require_GET
@login_required
def callback(request: HttpRequest) -> HttpResponse:
    """The provider's redirect back: finish the Connect, or say why nothing was saved."""
    try:
        done = flow.connect_finish(user=_actor(request), params=request.GET.dict())
    except flow.ConnectRefused as exc:
        messages.error(request, str(exc))
        return _credentials_page(None)
    account = f" ({done.account})" if done.account else ""
    verb = "reconnected" if done.reconnected else "connected"
    messages.success(request, f"“{done.credential.name}” {verb}{account}.")
    return _credentials_page(done.credential.organization_id)


@require_POST
@login_required
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke the tokens at the provider where it can, then forget them (the credential stays)."""
    credential = Credential.objects.filter(pk=pk).first()
    if credential is None:
        raise Http404("No such credential in your organizations.")
    _admin_of(request, credential.organization_id)
    if connection_spec(credential.kind) is None:
        raise Http404("This credential is typed in, not connected.")
    revoked = flow.connection_disconnect(credential)
    note = " and its access revoked at the provider" if revoked else " (the provider could not be asked to revoke it)"
    messages.success(request, f"“{credential.name}” disconnected{note}.")
    return _credentials_page(credential.organization_id)
