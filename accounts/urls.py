from django.urls import path

from . import api

organizations = api.OrganizationViewSet.as_view({"get": "list", "post": "create"})
organization = api.OrganizationViewSet.as_view({"get": "retrieve", "patch": "partial_update"})
members = api.MemberViewSet.as_view({"get": "list", "post": "create"})
invitations = api.InvitationViewSet.as_view({"get": "list", "post": "create"})
invitation = api.InvitationViewSet.as_view({"delete": "destroy"})
member = api.MemberViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"})

urlpatterns = [
    path("api/auth/register/", api.RegisterView.as_view(), name="auth-register"),
    path("api/auth/token/", api.TokenView.as_view(), name="auth-token"),
    path("api/auth/token/refresh/", api.TokenRefreshRotateView.as_view(), name="auth-token-refresh"),
    path("api/auth/logout/", api.LogoutView.as_view(), name="auth-logout"),
    path("api/me/", api.MeView.as_view(), name="me"),
    path("api/organizations/", organizations, name="organization-list"),
    path("api/organizations/<int:pk>/", organization, name="organization-detail"),
    path("api/organizations/<int:organization_pk>/members/", members, name="member-list"),
    path("api/organizations/<int:organization_pk>/members/<int:pk>/", member, name="member-detail"),
    path("api/organizations/<int:organization_pk>/invitations/", invitations, name="invitation-list"),
    path("api/organizations/<int:organization_pk>/invitations/<int:pk>/", invitation, name="invitation-detail"),
]
