"""Admin of protocols: inspect what was imported. Protocols change only by a re-import
(``import_protocols``), the one write path, so every page here is read-only."""

from django.contrib import admin

from elections.admin_utils import ElectionListFilter, LargeTableAdmin
from protocols.models import ElectionOption, ProtocolImport, ProtocolResult


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ProtocolImport)
class ProtocolImportAdmin(ReadOnlyAdmin):
    list_display = ("id", "election", "source", "file_format", "imported_at", "stored", "skipped_empty", "rejected")
    list_filter = (ElectionListFilter,)
    list_select_related = ("election",)


@admin.register(ElectionOption)
class ElectionOptionAdmin(ReadOnlyAdmin):
    list_display = ("name", "election", "position")
    list_filter = (ElectionListFilter,)
    list_select_related = ("election",)
    search_fields = ("name",)


@admin.register(ProtocolResult)
class ProtocolResultAdmin(ReadOnlyAdmin, LargeTableAdmin):
    list_display = (
        "constituency",
        "registered_voters",
        "ballots_issued",
        "ballots_cast",
        "valid",
        "invalid",
        "line",
    )
    list_filter = (ElectionListFilter,)
    list_select_related = ("constituency",)
    search_fields = ("constituency__code", "constituency__name")
    raw_id_fields = ("constituency", "election", "protocol_import")
