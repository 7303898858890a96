from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import api, webhooks

app_name = "workflows"

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("api/workflows", api.WorkflowViewSet, basename="workflow")
router.register("api/runs", api.RunViewSet, basename="run")

urlpatterns = [
    path("hooks/<str:token>", webhooks.hook, name="webhook"),
    path("hooks/<str:token>/", webhooks.hook),
    path("", include(router.urls)),
]
