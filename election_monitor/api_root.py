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
    "dashboard-summary",
    "dashboard-detailed",
    "metrics-recompute",
    "schema",
    "docs",
]


# A map of links, not a resource: documented as a plain object so the schema (and the
# deploy check, which builds it) has no guessing to warn about.
@extend_schema(responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
def api_root(request, format=None):
    """Election Monitor API. Per-object routes: hourly-stats/constituency/{id}/,
    hourly-stats/election/{id}/, metrics/constituency/{id}/ (and .../time-period/),
    metrics/election/{id}/ (and .../constituencies/)."""
    links = {}
    for name in ROOT_ROUTES:
        try:
            links[name] = reverse(name, request=request, format=format)
        except NoReverseMatch:
            continue
    return Response(links)
