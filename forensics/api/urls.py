from django.urls import re_path

from forensics.api import views

# Ids are matched loosely and validated by the views: "abc" is a 400 naming the parameter.
ELECTION = r"^forensics/election/(?P<election_id>[^/]+)/"

urlpatterns = [
    re_path(ELECTION + r"summary/$", views.SummaryView.as_view(), name="forensics-summary"),
    re_path(ELECTION + r"histogram/$", views.HistogramView.as_view(), name="forensics-histogram"),
    re_path(ELECTION + r"fingerprint/$", views.FingerprintView.as_view(), name="forensics-fingerprint"),
    re_path(ELECTION + r"integer-excess/$", views.IntegerExcessView.as_view(), name="forensics-integer-excess"),
    re_path(ELECTION + r"reconciliation/$", views.ReconciliationView.as_view(), name="forensics-reconciliation"),
]
