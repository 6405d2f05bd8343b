"""The product's URLs plus /bench/static/: a minimal DRF view returning a static dict, served by
the same gunicorn with the same middleware, authentication and renderer. Its throughput is the
raw limit the metrics endpoints are measured against. Never part of the product's urls."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from election_monitor.urls import urlpatterns as product_urlpatterns

STATIC_BODY = {"election_id": 1, "code": "static", "total_votes_cast": 0, "participation_rate": 0.0}


class StaticView(APIView):
    def get(self, request):
        return Response(STATIC_BODY)


urlpatterns = [path("bench/static/", StaticView.as_view(), name="bench-static"), *product_urlpatterns]
