"""Admin page of the reconciliation: each constituency with a stream and a protocol, both sides'
figures, their differences and the mismatch rule (read-only, like the protocols themselves)."""

from django.contrib import admin

from elections.admin_utils import ElectionListFilter, LargeTableAdmin
from forensics.models import Reconciliation
from forensics.reconciliation import stream_protocol_mismatch


@admin.register(Reconciliation)
class ReconciliationAdmin(LargeTableAdmin):
    list_display = (
        "constituency",
        "stream_votes",
        "protocol_ballots",
        "votes_difference",
        "stream_bulletins",
        "protocol_issued",
        "registered_difference",
        "mismatch",
    )
    list_filter = (ElectionListFilter,)
    list_select_related = ("constituency",)
    search_fields = ("constituency__code", "constituency__name")
    ordering = ("constituency_id",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(constituency__total_transactions__gt=0)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="stream votes")
    def stream_votes(self, obj):
        return obj.constituency.total_votes_cast

    @admin.display(description="protocol ballots (valid + invalid)")
    def protocol_ballots(self, obj):
        return obj.ballots_cast

    @admin.display(description="votes − ballots")
    def votes_difference(self, obj):
        return obj.constituency.total_votes_cast - obj.ballots_cast

    @admin.display(description="stream bulletins")
    def stream_bulletins(self, obj):
        return obj.constituency.total_bulletins_issued

    @admin.display(description="protocol ballots issued")
    def protocol_issued(self, obj):
        return obj.ballots_issued

    @admin.display(description="registered: constituency − protocol")
    def registered_difference(self, obj):
        return obj.constituency.registered_voters - obj.registered_voters

    @admin.display(description="mismatch", boolean=True)
    def mismatch(self, obj):
        return stream_protocol_mismatch(votes_cast=obj.constituency.total_votes_cast, ballots_cast=obj.ballots_cast)
