"""Admin for what we derive (SPEC section 9): inspect only.

Hourly stats, anomalies, episodes, their events and dirty marks are written by the metrics engine alone; a hand
edit would be overwritten by the next recompute (or repaired by the sweep), so the admin
shows them read-only. To change them, change the transactions or use the election's
"Recompute metrics" action.
"""

from django.contrib import admin

from election_monitor.admin_utils import ConstituencyListFilter, ElectionListFilter, LargeTableAdmin, election_filtered
from metrics.models import HOURLY_COMPUTED_FIELDS, Anomaly, DirtyBucket, Episode, EpisodeEvent, HourlyStats


class ReadOnlyAdmin(LargeTableAdmin):
    list_select_related = ("election", "constituency")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_ordering(self, request):
        # With an election chosen its (election, hour) index serves the newest hours first;
        # without one only the primary key avoids sorting the whole table.
        return ("-hour", "-id") if election_filtered(request) else ("-id",)

    @admin.display(description="constituency", ordering="constituency__code")
    def constituency_code(self, obj) -> str:
        return obj.constituency.code if obj.constituency_id else "(all)"

    @admin.display(description="election", ordering="election__code")
    def election_code(self, obj) -> str:
        return obj.election.code


@admin.register(HourlyStats)
class HourlyStatsAdmin(ReadOnlyAdmin):
    list_display = (
        "hour",
        "constituency_code",
        "election_code",
        *HOURLY_COMPUTED_FIELDS,
    )
    list_filter = (ElectionListFilter, ConstituencyListFilter)
    search_fields = ("constituency__code__exact",)
    date_hierarchy = "hour"
    sortable_by = ("hour",)


@admin.register(Anomaly)
class AnomalyAdmin(ReadOnlyAdmin):
    list_display = ("hour", "kind", "constituency_code", "election_code", "weight", "details", "detected_at")
    list_filter = (ElectionListFilter, ConstituencyListFilter, "kind")
    search_fields = ("constituency__code__exact",)
    date_hierarchy = "hour"
    sortable_by = ("hour",)


@admin.register(Episode)
class EpisodeAdmin(ReadOnlyAdmin):
    """Runs of flagged hours (docs/EPISODES.md), latest first."""

    list_display = (
        "last_hour",
        "kind",
        "constituency_code",
        "election_code",
        "first_hour",
        "hours",
        "peak",
        "open",
        "weight",
        "updated_at",
    )
    list_filter = (ElectionListFilter, ConstituencyListFilter, "kind", "open")
    search_fields = ("constituency__code__exact",)
    date_hierarchy = "last_hour"
    sortable_by = ("last_hour",)

    def get_ordering(self, request):
        return ("-last_hour", "-id")  # the API's order, served by an index with or without an election


@admin.register(EpisodeEvent)
class EpisodeEventAdmin(ReadOnlyAdmin):
    """The outbox alerts deliver from: what opened, closed or was withdrawn, and when."""

    list_display = ("id", "created_at", "event", "kind", "constituency_code", "election_code", "first_hour", "payload")
    list_filter = (ElectionListFilter, ConstituencyListFilter, "event", "kind")
    search_fields = ("constituency__code__exact",)
    sortable_by = ()

    def get_ordering(self, request):
        return ("-id",)


@admin.register(DirtyBucket)
class DirtyBucketAdmin(ReadOnlyAdmin):
    """Pending recomputes: a long list here means the flush tasks are behind (or lost)."""

    list_display = ("id", "election_code", "constituency_code", "hour", "created_at")
    list_filter = (ElectionListFilter,)
    sortable_by = ()

    def get_ordering(self, request):
        return ("-id",)
