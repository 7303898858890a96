from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, live
from .files import download
from .intake import webhooks
from .ops import insights_api, stats

app_name = "workflows"

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("api/workflows", api.WorkflowViewSet, basename="workflow")
router.register("api/runs", api.RunViewSet, basename="run")
router.register("api/templates", api.TemplateViewSet, basename="template")

urlpatterns = [
    path("hooks/<str:token>", webhooks.hook, name="webhook"),
    path("hooks/<str:token>/", webhooks.hook),
    path("files/<str:token>", download.download, name="file-download"),
    path("runs/<uuid:run_id>/live", live.run_live, name="run-live"),
    path("runs/<uuid:run_id>/live.json", live.run_live_state, name="run-live-state"),
    path("api/stats/", stats.StatsView.as_view(), name="stats"),
    path("api/insights/", insights_api.InsightsView.as_view(), name="insights"),
    path("api/runs/resume/<str:token>/", api.ResumeView.as_view(), name="run-resume"),
    path("api/templates/check/", api.TemplateCheckView.as_view(), name="template-check"),
    path("api/schema/workflow-definition.json", api.DefinitionSchemaView.as_view(), name="definition-schema"),
    path("", include(router.urls)),
]
