"""Links from the admin to the dashboard: the metrics app's constituency and hourly-stats
admins, each with the matching dashboard page (upper floors extend the admins of lower ones,
as metrics/admin.py extends the elections admin)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from elections.models import Constituency
from metrics.admin import ConstituencyWithMetricsAdmin, HourlyStatsAdmin
from metrics.models import HourlyStats


class ConstituencyWithDashboardAdmin(ConstituencyWithMetricsAdmin):
    @admin.display(description="data")
    def related_lists(self, obj: Constituency) -> str:
        lists = super().related_lists(obj)
        if not obj.pk:
            return lists
        url = reverse("dashboard:constituency", args=[obj.election.code, obj.code])
        return format_html('{} · <a href="{}">Dashboard page</a>', lists, url)


class HourlyStatsWithDashboardAdmin(HourlyStatsAdmin):
    list_display = (*HourlyStatsAdmin.list_display, "dashboard_link")

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: HourlyStats) -> str:
        url = reverse("dashboard:constituency", args=[obj.election.code, obj.constituency.code])
        return format_html('<a href="{}#hourly">hourly charts</a>', url)


admin.site.unregister(Constituency)
admin.site.register(Constituency, ConstituencyWithDashboardAdmin)
admin.site.unregister(HourlyStats)
admin.site.register(HourlyStats, HourlyStatsWithDashboardAdmin)
