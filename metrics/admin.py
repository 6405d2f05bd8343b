"""Admin for what we derive (SPEC section 9): inspect only.

Hourly stats, anomalies and dirty marks are written by the metrics engine alone; a hand
edit would be overwritten by the next recompute (or repaired by the sweep), so the admin
shows them read-only. To change them, change the transactions or use the election's
"Recompute metrics" action.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from election_monitor.admin_utils import ConstituencyListFilter, ElectionListFilter, LargeTableAdmin, election_filtered
from metrics.models import HOURLY_COMPUTED_FIELDS, Anomaly, DirtyBucket, HourlyStats


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
        "dashboard_link",
    )
    list_filter = (ElectionListFilter, ConstituencyListFilter)
    search_fields = ("constituency__code__exact",)
    date_hierarchy = "hour"
    sortable_by = ("hour",)

    @admin.display(description="dashboard")
    def dashboard_link(self, obj) -> str:
        url = reverse("dashboard:constituency", args=[obj.election.code, obj.constituency.code])
        return format_html('<a href="{}#hourly">hourly charts</a>', url)


@admin.register(Anomaly)
class AnomalyAdmin(ReadOnlyAdmin):
    list_display = ("hour", "kind", "constituency_code", "election_code", "weight", "details", "detected_at")
    list_filter = (ElectionListFilter, ConstituencyListFilter, "kind")
    search_fields = ("constituency__code__exact",)
    date_hierarchy = "hour"
    sortable_by = ("hour",)


@admin.register(DirtyBucket)
class DirtyBucketAdmin(ReadOnlyAdmin):
    """Pending recomputes: a long list here means the flush tasks are behind (or lost)."""

    list_display = ("id", "election_code", "constituency_code", "hour", "created_at")
    list_filter = (ElectionListFilter,)
    sortable_by = ()

    def get_ordering(self, request):
        return ("-id",)
