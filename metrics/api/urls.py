from django.urls import path, re_path

from metrics.api import views

# Ids are matched loosely and validated by the views, so "abc" gets a 400 naming the
# parameter instead of an unmatched-URL page.
ID = r"(?P<{}>[^/]+)"

urlpatterns = [
    re_path(
        rf"^hourly-stats/constituency/{ID.format('constituency_id')}/$",
        views.HourlyStatsByConstituencyView.as_view(),
        name="hourly-stats-constituency",
    ),
    re_path(
        rf"^hourly-stats/election/{ID.format('election_id')}/$",
        views.HourlyStatsByElectionView.as_view(),
        name="hourly-stats-election",
    ),
    re_path(
        rf"^metrics/constituency/{ID.format('constituency_id')}/$",
        views.ConstituencyMetricsView.as_view(),
        name="constituency-metrics",
    ),
    re_path(
        rf"^metrics/constituency/{ID.format('constituency_id')}/time-period/$",
        views.ConstituencyTimePeriodView.as_view(),
        name="constituency-time-period",
    ),
    re_path(
        rf"^metrics/election/{ID.format('election_id')}/$",
        views.ElectionMetricsView.as_view(),
        name="election-metrics",
    ),
    re_path(
        rf"^metrics/election/{ID.format('election_id')}/constituencies/$",
        views.ElectionConstituenciesView.as_view(),
        name="election-constituencies",
    ),
    path("metrics/dashboard/summary/", views.DashboardSummaryView.as_view(), name="dashboard-summary"),
    path("metrics/dashboard/detailed/", views.DashboardDetailedView.as_view(), name="dashboard-detailed"),
    path("metrics/recompute/", views.RecomputeView.as_view(), name="metrics-recompute"),
    path("anomalies/", views.AnomalyListView.as_view(), name="anomaly-list"),
    path("anomalies/episodes/", views.EpisodeListView.as_view(), name="episode-list"),
]
