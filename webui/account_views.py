"""Accounts in the browser: sign-up, e-mail verification, password reset, invitations.

The rules are ``accounts.services``' (the API's): the sign-up policy
(``POTAFLOW_SIGNUP``), the non-enumerating answers (a known and a new address
see the same page, and the worker mails each what applies), invitations that
are single-use, expiring and revocable. Every form here is throttled per
client address like the API's auth endpoints. After sending, the pages say
where the message went when the server uses a development backend (a folder,
the worker's log), so ``make run`` works without a mail server.
"""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts import links, mail, services
from accounts.models import Invitation, Role, User, normalize_email
from accounts.throttles import form_throttled

from . import selectors


def _too_many(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    context["form_error"] = "Too many attempts from your address: wait a minute and try again."
    return render(request, template, context, status=429)


def _mail_context() -> dict[str, Any]:
    return {"mail_destination": mail.destination()}


# -- sign-in ---------------------------------------------------------------------------
class SignInForm(AuthenticationForm):
    """Django's form; an account whose address is not verified yet is told so (with the right password only)."""

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except ValidationError:
            email = normalize_email(self.cleaned_data.get("username") or "")
            user = User.objects.filter(email__iexact=email, email_verified_at__isnull=True, is_active=True).first()
            if user is not None and user.check_password(self.cleaned_data.get("password") or ""):
                raise ValidationError(
                    "Confirm your e-mail address first: follow the link in the message we sent to it. "
                    "No message? Sign up again with the same address to get a new link.",
                    code="unverified",
                ) from None
            raise


class LoginView(auth_views.LoginView):
    template_name = "webui/login.html"
    redirect_authenticated_user = True
    authentication_form = SignInForm

    def get_default_redirect_url(self) -> str:
        return reverse("webui:workflows")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "signup_policy": services.signup_policy()}


# -- sign-up and verification ------------------------------------------------------------
class SignupForm(forms.Form):
    email = forms.EmailField(max_length=254)
    password = forms.CharField(strip=False, widget=forms.PasswordInput)
    organization = forms.CharField(max_length=150)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    policy = services.signup_policy()
    context: dict[str, Any] = {"policy": policy, "closed_reason": services.SIGNUP_CLOSED.get(policy, "")}
    if policy != "open" or request.method == "GET":
        return render(request, "webui/signup.html", {**context, "form": SignupForm()})
    form = SignupForm(request.POST)
    context["form"] = form
    if form_throttled(request, "signup"):
        return _too_many(request, "webui/signup.html", context)
    if form.is_valid():
        try:
            services.user_register(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                organization_name=form.cleaned_data["organization"],
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            return render(
                request,
                "webui/mail_sent.html",
                {
                    **_mail_context(),
                    "title": "Check your inbox",
                    "address": form.cleaned_data["email"],
                    "what": "a link to confirm your address. Follow it, then sign in with your password.",
                },
            )
    return render(request, "webui/signup.html", context, status=400)


@require_http_methods(["GET"])
def verify_email(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    user = links.user_of(uidb64)
    verified = user is not None and services.email_verify(user=user, token=token)
    return render(request, "webui/verified.html", {"verified": verified}, status=200 if verified else 400)


# -- password reset ----------------------------------------------------------------------
class ResetRequestForm(forms.Form):
    email = forms.EmailField(max_length=254)


@require_http_methods(["GET", "POST"])
def password_reset(request: HttpRequest) -> HttpResponse:
    form = ResetRequestForm(request.POST or None)
    if request.method == "POST":
        if form_throttled(request, "reset"):
            return _too_many(request, "webui/password_reset.html", {"form": form})
        if form.is_valid():
            services.password_reset_request(email=form.cleaned_data["email"])
            return render(
                request,
                "webui/mail_sent.html",
                {
                    **_mail_context(),
                    "title": "Check your inbox",
                    "address": form.cleaned_data["email"],
                    "what": "a link to choose a new password, if an account uses this address.",
                },
            )
    return render(request, "webui/password_reset.html", {"form": form}, status=400 if form.errors else 200)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's view (the token leaves the URL for the session first); a reset also proves the address."""

    template_name = "webui/password_reset_confirm.html"
    success_url = reverse_lazy("webui:login")
    token_generator = links.reset_tokens

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.email_mark_verified(user=form.user)
        messages.success(self.request, "Your password was changed: sign in with the new one.")
        return response


# -- invitations ---------------------------------------------------------------------------
class InvitationSignupForm(forms.Form):
    full_name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(strip=False, widget=forms.PasswordInput)


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    found = links.invitation_of(token)
    try:
        invite = services.invitation_check(found)
    except services.InvitationUnusable as exc:
        return render(request, "webui/invitation.html", {"problem": " ".join(exc.messages)}, status=410)
    has_account = User.objects.filter(email__iexact=invite.email).exists()
    form = InvitationSignupForm(request.POST or None)
    context: dict[str, Any] = {
        "invitation": invite,
        "has_account": has_account,
        "form": form,
        "signup_policy": services.signup_policy(),
        "token": token,
    }
    if request.method == "POST":
        if form_throttled(request, "invitation"):
            return _too_many(request, "webui/invitation.html", context)
        try:
            if request.user.is_authenticated:
                services.invitation_accept(invitation=invite, user=request.user)
            elif not has_account and form.is_valid():
                user, _membership = services.invitation_signup(
                    invitation=invite, password=form.cleaned_data["password"], full_name=form.cleaned_data["full_name"]
                )
                login(request, user, backend="accounts.backends.ThrottledModelBackend")
            else:
                return render(request, "webui/invitation.html", context, status=400)
        except services.InvitationUnusable as exc:
            context["problem"] = " ".join(exc.messages)
            return render(request, "webui/invitation.html", context, status=409)
        except PermissionDenied as exc:
            context["problem"] = str(exc)
            return render(request, "webui/invitation.html", context, status=403)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
            return render(request, "webui/invitation.html", context, status=400)
        messages.success(
            request, f"Welcome to {invite.organization.name}: you joined as {invite.get_role_display().lower()}."
        )
        return redirect(reverse("webui:workflows") + f"?org={invite.organization_id}")
    return render(request, "webui/invitation.html", context)


@require_POST
def invitation_create(request: HttpRequest) -> HttpResponse:
    membership = selectors.current_membership(request)
    if membership is None or not request.user.is_authenticated:
        raise PermissionDenied("Sign in first.")
    email, role = request.POST.get("email", ""), request.POST.get("role", Role.VIEWER)
    try:
        services.invitation_create(actor=request.user, organization=membership.organization, email=email, role=role)
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in exc.message_dict.values() for m in ms))
    else:
        where = mail.destination()
        note = f" (this server writes mail to {where.where})" if where.where else ""
        messages.success(request, f"Invitation sent to {normalize_email(email)} as {role}{note}.")
    return redirect(reverse("webui:members") + f"?org={membership.organization_id}")


@require_POST
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.is_authenticated:
        raise PermissionDenied("Sign in first.")
    found = Invitation.objects.select_related("organization").filter(pk=pk).first()
    if found is None:
        raise PermissionDenied("No such invitation.")
    selectors.membership_in(request.user, found.organization_id)  # 404 for another organization's
    services.invitation_revoke(actor=request.user, invitation=found)
    messages.success(request, f"The invitation of {found.email} was revoked: its link no longer works.")
    return redirect(reverse("webui:members") + f"?org={found.organization_id}")
