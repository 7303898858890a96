from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.admin_login import login as admin_login
from workflows.admin import hide_beat_tables

from .health import healthz
from .metrics import metrics

# SimpleAdminConfig (settings.INSTALLED_APPS): the admin modules load here, in
# the processes that serve URLs, and only then can beat's tables be hidden.
admin.autodiscover()
hide_beat_tables()

# Unknown URLs and crashes under /api/ answer in the API's error shape (potaflow.api).
handler400 = "potaflow.api.bad_request"
handler404 = "potaflow.api.not_found"
handler500 = "potaflow.api.server_error"


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask every site for /favicon.ico: the member pages' icon (it was a 404 on every page)."""
    return HttpResponseRedirect(static("webui/favicon.svg"))


urlpatterns = [
    path("", RedirectView.as_view(url="/app/"), name="home"),  # `make run` prints the root URL: the member pages
    path("favicon.ico", favicon, name="favicon"),
    # Before admin.site.urls: the same login view, answering a throttled attempt with a 429.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file: no inline script under the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("accounts.urls")),
    path("", include("integrations.urls")),
    path("", include("workflows.urls")),
    path("", include("webui.urls")),
]
