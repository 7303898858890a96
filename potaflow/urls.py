from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .health import healthz

# Unknown URLs and crashes under /api/ answer in the API's error shape (potaflow.api).
handler404 = "potaflow.api.not_found"
handler500 = "potaflow.api.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/app/"), name="home"),  # `make run` prints the root URL: the member pages
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("accounts.urls")),
    path("", include("integrations.urls")),
    path("", include("workflows.urls")),
    path("", include("webui.urls")),
]
