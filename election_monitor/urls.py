from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from election_monitor.admin_login import admin_login
from election_monitor.api_root import api_root

api = [
    path("", api_root, name="api-root"),
    path("", include("elections.api.urls")),
    path("", include("metrics.api.urls")),
    path("", include("forensics.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("", include("dashboard.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    # Before the admin's own URLs, so that this path reaches the throttled view.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/", include(api)),
]
