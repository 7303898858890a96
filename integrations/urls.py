from django.urls import path

from . import api

credentials = api.CredentialViewSet.as_view({"get": "list", "post": "create"})
credential = api.CredentialViewSet.as_view(
    {"get": "retrieve", "patch": "partial_update", "put": "update", "delete": "destroy"}
)

urlpatterns = [
    path("api/credentials/", credentials, name="credential-list"),
    path("api/credentials/<int:pk>/", credential, name="credential-detail"),
    path("api/actions/", api.ActionListView.as_view(), name="action-list"),
]
