from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from election_monitor.admin_login import admin_login
from election_monitor.api_root import api_root

# Django tries patterns in order on every request; the prefixes below do not overlap, so the
# order only decides how many are tried first. The API comes first, the metrics reads (the
# most frequent requests) first within it (docs/PERFORMANCE.md, item 6).
api = [
    path("", api_root, name="api-root"),
    path("", include("metrics.api.urls")),
    path("", include("elections.api.urls")),
    path("", include("forensics.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("api/", include(api)),
    path("", include("dashboard.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    # Before the admin's own URLs, so that this path reaches the throttled view.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
]
