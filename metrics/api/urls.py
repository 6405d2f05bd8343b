from django.urls import path

from metrics.api import views

urlpatterns = [
    path("metrics/recompute/", views.RecomputeView.as_view(), name="metrics-recompute"),
]
