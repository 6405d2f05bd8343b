from django.urls import NoReverseMatch
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
