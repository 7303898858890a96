from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from . import account_views, connection_views, insights_views, org_views, views, workflow_views

app_name = "webui"

urlpatterns = [
    path("app/", RedirectView.as_view(pattern_name="webui:workflows"), name="home"),
    path("app/login/", account_views.LoginView.as_view(), name="login"),
    path("app/signup/", account_views.signup, name="signup"),
    path("app/verify/<str:uidb64>/<str:token>/", account_views.verify_email, name="verify-email"),
    path("app/password-reset/", account_views.password_reset, name="password-reset"),
    path(
        "app/password-reset/<str:uidb64>/<str:token>/",
        account_views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("app/invitations/<str:token>/", account_views.invitation, name="invitation"),
    path("app/members/invite/", account_views.invitation_create, name="invitation-create"),
    path("app/members/invitations/<int:pk>/revoke/", account_views.invitation_revoke, name="invitation-revoke"),
    path("app/logout/", auth_views.LogoutView.as_view(next_page="webui:login"), name="logout"),
    path("app/workflows/", views.workflow_list, name="workflows"),
    path("app/workflows/new/", views.builder_new, name="builder-new"),
    path("app/workflows/<int:pk>/", views.builder, name="builder"),
    path("app/workflows/<int:pk>/active/", views.workflow_set_active, name="set-active"),
    path("app/workflows/<int:pk>/duplicate/", workflow_views.workflow_duplicate, name="workflow-duplicate"),
    path("app/workflows/<int:pk>/export/", workflow_views.workflow_export, name="workflow-export"),
    path("app/workflows/<int:pk>/delete/", workflow_views.workflow_delete, name="workflow-delete"),
    path("app/workflows/import/", workflow_views.workflow_import, name="workflow-import"),
    path("app/templates/", workflow_views.template_gallery, name="templates"),
    path("app/templates/<slug:slug>/use/", workflow_views.template_use, name="template-use"),
    path("app/workflows/<int:pk>/versions/<int:number>/restore/", views.version_restore, name="version-restore"),
    path("app/schedule-preview/", views.schedule_preview, name="schedule-preview"),
    path("app/runs/", views.run_list, name="runs"),
    path("app/insights/", insights_views.insights_page, name="insights"),
    path("app/runs/<uuid:run_id>/", views.run_page, name="run"),
    path("app/runs/<uuid:run_id>/replay/", views.run_replay, name="run-replay"),
    path("app/runs/<uuid:run_id>/live/", views.run_live, name="run-live"),
    path("app/runs/<uuid:run_id>/files/<uuid:file_id>/", views.run_file, name="run-file"),
    path("app/credentials/", org_views.credential_list, name="credentials"),
    path("app/credentials/new/", org_views.credential_form, name="credential-new"),
    path("app/credentials/<int:pk>/", org_views.credential_form, name="credential"),
    path("app/credentials/connect/<str:kind>/", connection_views.connect_new, name="connect-new"),
    path("app/credentials/<int:pk>/connect/", connection_views.connect, name="connect"),
    path("app/credentials/<int:pk>/disconnect/", connection_views.disconnect, name="disconnect"),
    path("oauth/callback/", connection_views.callback, name="oauth-callback"),
    path("app/members/", org_views.member_list, name="members"),
    path("app/members/add/", org_views.member_add, name="member-add"),
    path("app/members/<int:pk>/role/", org_views.member_role, name="member-role"),
    path("app/members/<int:pk>/remove/", org_views.member_remove, name="member-remove"),
]
