"""Admin for what we derive: inspect only.

Hourly stats, anomalies, episodes, their events and dirty marks are written by the metrics engine alone; a hand
edit would be overwritten by the next recompute (or repaired by the sweep), so the admin
shows them read-only. To change them, change the transactions or use the election's
"Recompute metrics" action.
"""

from django.contrib import admin, messages

from elections.admin import ConstituencyAdmin, ElectionAdmin
from elections.admin_utils import ConstituencyListFilter, ElectionListFilter, LargeTableAdmin, election_filtered
from elections.models import Constituency, Election
from metrics.models import (
    HOURLY_COMPUTED_FIELDS,
    Anomaly,
    DirtyBucket,
    DriftCheck,
    Episode,
    EpisodeEvent,
    HourlyStats,
)
from metrics.tasks import recompute_election

DERIVED_CHANGELISTS = (
    ("metrics_hourlystats", "Hourly stats"),
    ("metrics_anomaly", "Anomalies"),
    ("metrics_episode", "Episodes"),
    ("metrics_episodeevent", "Episode events"),
)


class ElectionWithMetricsAdmin(ElectionAdmin):
    """The elections admin, plus what the metrics app adds to it: links to the derived
    lists and the recompute action (observed data's admin knows nothing of metrics)."""

    related_changelists = (*ElectionAdmin.related_changelists, *DERIVED_CHANGELISTS)
    actions = (*ElectionAdmin.actions, "recompute_metrics")

    @admin.action(description="Recompute metrics of the selected elections")
    def recompute_metrics(self, request, queryset):
        for election in queryset.order_by("id"):
            try:
                outcome = recompute_election.delay(election.id)
            except Exception as error:
                # The broker is down: say so; nothing was changed, the action can be re-run.
                self.message_user(
                    request,
                    f"Could not queue the recompute of {election.code}: {error}. "
                    f"Run `manage.py backfill_metrics --election {election.code}` instead.",
                    messages.ERROR,
                )
                continue
            if outcome.ready():
                # Eager Celery (the embedded default): it already ran, so report what it did.
                result = outcome.get()
                self.message_user(
                    request,
                    f"Recomputed the metrics of {election.code}: {result['buckets_recounted']} buckets recounted, "
                    f"{result['rows_written']} hourly rows written, {result['rows_deleted']} deleted, "
                    f"{result['constituencies_refreshed']} constituencies refreshed.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request, f"Queued a metrics recompute of {election.code} (task {outcome.id}).", messages.SUCCESS
                )


class ConstituencyWithMetricsAdmin(ConstituencyAdmin):
    related_changelists = (*ConstituencyAdmin.related_changelists, *DERIVED_CHANGELISTS)


admin.site.unregister(Election)
admin.site.register(Election, ElectionWithMetricsAdmin)
admin.site.unregister(Constituency)
admin.site.register(Constituency, ConstituencyWithMetricsAdmin)


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
    """Runs of flagged hours (docs/METRICS.md#episodes-and-the-anomaly-score), latest first."""

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


@admin.register(DriftCheck)
class DriftCheckAdmin(ReadOnlyAdmin):
    """Verifications of settled elections: a row with repairs means figures had drifted
    from their transactions (and were repaired, logged and alerted)."""

    list_display = ("checked_at", "election_code", "repaired_buckets", "repaired_constituencies")
    list_filter = (ElectionListFilter,)
    list_select_related = ("election",)
    date_hierarchy = "checked_at"
    sortable_by = ("checked_at",)

    def get_ordering(self, request):
        return ("-id",)
