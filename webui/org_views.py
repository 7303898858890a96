"""Member pages for organization admins: credentials and members.

Credentials (admins and owners, as in the API): list, create, change. The form
for a kind is built from ``integrations.credential_kinds`` (the validator every
entry point uses); secret fields are write-only — blank keeps the stored
value. Members: everyone sees the list; admins and owners add existing users
by email, change roles and remove members through ``accounts.services``
(which keeps the last owner and the owner-only rules).
"""

from typing import Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services as account_services
from accounts.models import Membership, Role, User
from integrations import services as credential_services
from integrations.credential_kinds import KINDS, Field
from integrations.models import Credential, CredentialKind
from integrations.oauth import selectors as connection_selectors
from integrations.oauth.providers import redirect_uri

from . import selectors
from .views import _base


def _actor(request: HttpRequest) -> User:
    """The signed-in user: every view that acts is behind ``login_required``."""
    return cast(User, request.user)


def _admin_membership(request: HttpRequest) -> Membership:
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    if not membership.has_role(Role.ADMIN):
        raise PermissionDenied("Credentials are managed by the organization's admins and owners.")
    return membership


def _field_rows(kind: str, values: dict[str, Any], errors: dict[str, list[str]], credential: Credential | None):
    markers = credential_services.credential_secret_markers(credential) if credential else {}
    rows = []
    for f in KINDS[kind].fields:
        value = values.get(f.name, "")
        if credential is not None and not f.secret and f.name not in values:
            value = credential.public_data.get(f.name, "")
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        rows.append(
            {
                "field": f,
                "input": _input_type(f),
                "value": "" if f.secret else ("" if value is None else value),
                "is_set": markers.get(f.name, False),
                "errors": errors.get(f.name, []),
                "label": f.name.replace("_", " ").capitalize(),
            }
        )
    return rows


def _input_type(f: Field) -> str:
    if f.secret and f.type == "json":
        return "secret-json"
    if f.secret:
        return "password"
    return {"integer": "number", "email": "email", "choice": "select", "json": "textarea"}.get(f.type, "text")


def _posted_fields(request: HttpRequest, kind: str) -> dict[str, Any]:
    """The kind's fields as typed; a blank one is left out (on a change: keeps its value)."""
    data = {}
    for f in KINDS[kind].fields:
        value = request.POST.get(f"field_{f.name}", "")
        if value.strip() != "":
            data[f.name] = value
    return data


def _errors(exc: ValidationError) -> dict[str, list[str]]:
    return exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}


@require_http_methods(["GET"])
@login_required
def credential_list(request: HttpRequest) -> HttpResponse:
    membership = _admin_membership(request)
    credentials = (
        Credential.objects.filter(organization_id=membership.organization_id)
        .select_related("connection")
        .order_by("name")
    )
    rows = [
        {
            "credential": c,
            "public": c.public_data,
            "secret_set": credential_services.credential_secret_markers(c),
            "connection": connection_selectors.connection_info(c),
        }
        for c in credentials
    ]
    context = _base(
        request,
        membership,
        rows=rows,
        kinds=connection_selectors.typed_in_kinds(),
        providers=connection_selectors.connect_buttons(),
        redirect_uri=redirect_uri(),
        nav="credentials",
    )
    return render(request, "webui/credentials.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def credential_form(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    credential = None
    if pk is not None:
        credential = Credential.objects.select_related("organization").filter(pk=pk).first()
        if credential is None:
            raise Http404("No such credential in your organizations.")
        membership = selectors.membership_in(request.user, credential.organization_id)  # else 404
        if not membership.has_role(Role.ADMIN):
            raise PermissionDenied("Credentials are managed by the organization's admins and owners.")
        kind = credential.kind
    else:
        membership = _admin_membership(request)
        kind = request.POST.get("kind") or request.GET.get("kind") or ""
        if kind not in KINDS:
            kind = ""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    name = credential.name if credential else ""
    if request.method == "POST" and kind:
        name = request.POST.get("name", "").strip()
        values = _posted_fields(request, kind)
        try:
            if credential is None:
                credential = credential_services.credential_create(
                    organization=membership.organization, name=name, kind=kind, secret=values
                )
                messages.success(request, f"Credential “{credential.name}” created.")
            else:
                credential_services.credential_update(credential=credential, name=name, secret=values)
                messages.success(request, f"Credential “{credential.name}” saved.")
            return redirect(reverse("webui:credentials") + f"?org={membership.organization_id}")
        except ValidationError as exc:
            errors = _errors(exc)
            if credential is not None and credential.pk is None:
                credential = None
    context = _base(
        request,
        membership,
        credential=credential,
        kind=kind,
        kind_label=dict(CredentialKind.choices).get(kind, ""),
        kinds=connection_selectors.typed_in_kinds(),
        redirect_uri=redirect_uri() if kind and KINDS[kind].connection is not None else "",
        name=name,
        name_errors=errors.get("name", []) + errors.get("__all__", []),
        rows=_field_rows(kind, values, errors, credential) if kind else [],
        nav="credentials",
    )
    return render(request, "webui/credential_form.html", context, status=400 if errors else 200)


@require_http_methods(["GET"])
@login_required
def member_list(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    members = Membership.objects.filter(organization_id=membership.organization_id).select_related("user")
    roles = Role.choices if membership.role == Role.OWNER else [c for c in Role.choices if c[0] != Role.OWNER]
    context = _base(
        request,
        membership,
        members=members.order_by("user__email"),
        roles=roles,
        manages=membership.has_role(Role.ADMIN),
        invitations=account_services.invitations_pending(membership.organization).select_related("invited_by")
        if membership.has_role(Role.ADMIN)
        else [],
        invitation_days=settings.POTAFLOW_INVITATION_DAYS,
        nav="members",
    )
    return render(request, "webui/members.html", context)


def _member_redirect(membership: Membership) -> HttpResponse:
    return redirect(reverse("webui:members") + f"?org={membership.organization_id}")


@require_POST
@login_required
def member_add(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None:
        raise Http404("You belong to no organization.")
    email, role = request.POST.get("email", ""), request.POST.get("role", Role.VIEWER)
    try:
        account_services.membership_invite(
            actor=_actor(request), organization=membership.organization, email=email, role=role
        )
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in _errors(exc).values() for m in ms))
    else:
        messages.success(request, f"{email} joined {membership.organization.name} with the {role} role.")
    return _member_redirect(membership)


def _target(request: HttpRequest, pk: int) -> Membership:
    target = Membership.objects.select_related("organization", "user").filter(pk=pk).first()
    if target is None:
        raise Http404("No such member.")
    selectors.membership_in(request.user, target.organization_id)  # 404 for another organization's member
    return target


@require_POST
@login_required
def member_role(request: HttpRequest, pk: int) -> HttpResponse:
    target = _target(request, pk)
    role = request.POST.get("role", "")
    try:
        account_services.membership_change_role(actor=_actor(request), membership=target, role=role)
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in _errors(exc).values() for m in ms))
    else:
        messages.success(request, f"{target.user.email} now has the {role} role.")
    return _member_redirect(target)


@require_POST
@login_required
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    target = _target(request, pk)
    try:
        account_services.membership_remove(actor=_actor(request), membership=target)
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in _errors(exc).values() for m in ms))
    else:
        messages.success(request, f"{target.user.email} no longer belongs to {target.organization.name}.")
    if target.user_id == request.user.pk:
        return redirect("webui:workflows")
    return _member_redirect(target)
