from urllib.parse import unquote

from django.urls import NoReverseMatch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.reverse import reverse

# Named routes shown at /api/ so the browsable API is a map of the product.
ROOT_ROUTES = [
    "election-list",
    "constituency-list",
    "transaction-list",
    "anomaly-list",
    "episode-list",
    "dashboard-summary",
    "dashboard-detailed",
    "metrics-recompute",
    "schema",
    "docs",
]

# Per-object routes, shown as URL templates: route name -> its id parameter.
OBJECT_ROUTES = {
    "hourly-stats-constituency": "constituency_id",
    "hourly-stats-election": "election_id",
    "constituency-metrics": "constituency_id",
    "constituency-time-period": "constituency_id",
    "election-metrics": "election_id",
    "election-constituencies": "election_id",
}


# A map of links, not a resource: documented as a plain object so the schema (and the
# deploy check, which builds it) has no guessing to warn about.
@extend_schema(responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
def api_root(request, format=None):
    """Election Monitor API: the list routes, and the per-object routes as URL templates
    (replace {election_id} / {constituency_id}; ids are listed at elections/ and
    constituencies/). Interactive documentation at docs/, OpenAPI 3 schema at schema/."""
    links = {}
    for name in ROOT_ROUTES:
        try:
            links[name] = reverse(name, request=request, format=format)
        except NoReverseMatch:
            continue
    for name, param in OBJECT_ROUTES.items():
        try:
            url = reverse(name, kwargs={param: f"{{{param}}}"}, request=request)
        except NoReverseMatch:
            continue
        links[name] = unquote(url)
    return Response(links)
