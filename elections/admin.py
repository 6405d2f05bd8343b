"""Admin for what was observed (SPEC section 9).

Writes go through the same doors as every other ingest path: adding or changing a
transaction is ``Transaction.save`` (derives the hour; signals mark the buckets dirty), and
deleting goes through ``elections.services.transactions_delete``, so metrics follow.
Nothing here inlines the thousands of rows an election owns; pages link to filtered lists.
"""

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from election_monitor.admin_utils import (
    ELECTION_PARAMETER,
    ConstituencyListFilter,
    ElectionListFilter,
    LargeTableAdmin,
    election_filtered,
)
from elections.models import (
    CONSTITUENCY_METRIC_FIELDS,
    Constituency,
    Election,
    ElectionStatus,
    Transaction,
    grace_period,
)
from elections.services import transactions_delete
from elections.signals import buckets_changed


def _changelist_link(model_name: str, label: str, **params) -> str:
    url = reverse(f"admin:{model_name}_changelist")
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


class ElectionStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return ElectionStatus.choices

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == ElectionStatus.SCHEDULED:
            return queryset.filter(starts_at__gt=now)
        if self.value() == ElectionStatus.ACTIVE:
            return queryset.active(now)
        if self.value() == ElectionStatus.CLOSED:
            return queryset.filter(ends_at__lte=now - grace_period())
        return queryset


@admin.register(Election)
class ElectionAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "timezone", "starts_at", "ends_at", "status", "constituency_count")
    list_filter = (ElectionStatusFilter,)
    search_fields = ("code", "name")
    date_hierarchy = "starts_at"
    ordering = ("-starts_at", "-id")
    readonly_fields = ("status", "created_at", "related_lists")
    fields = ("code", "name", "timezone", "starts_at", "ends_at", "status", "created_at", "related_lists")
    actions = ("recompute_metrics",)

    def get_queryset(self, request):
        # One grouped count over the constituency table, not a query per election.
        return super().get_queryset(request).annotate(_constituency_count=Count("constituencies"))

    @admin.display(description="constituencies", ordering="_constituency_count")
    def constituency_count(self, obj: Election) -> int:
        return obj._constituency_count

    @admin.display(description="status")
    def status(self, obj: Election) -> str:
        return obj.status if obj.pk else "-"

    @admin.display(description="data")
    def related_lists(self, obj: Election) -> str:
        if not obj.pk:
            return "-"
        # Links instead of inlines: an election owns thousands of constituencies and
        # millions of transactions.
        links = [
            ("elections_constituency", f"Constituencies ({obj.constituencies.count()})"),
            ("elections_transaction", "Transactions"),
            ("metrics_hourlystats", "Hourly stats"),
            ("metrics_anomaly", "Anomalies"),
        ]
        return format_html_join(
            " · ", "{}", ((_changelist_link(name, label, **{ELECTION_PARAMETER: obj.pk}),) for name, label in links)
        )

    @admin.action(description="Recompute metrics of the selected elections")
    def recompute_metrics(self, request, queryset):
        from metrics.tasks import recompute_election

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

    def get_deleted_objects(self, objs, request):
        return _summarized_deletion(objs, request, election_ids=[obj.pk for obj in objs])

    def delete_model(self, request, obj):
        election_id = obj.pk
        with transaction.atomic():
            obj.delete()
            _invalidate_after_commit(election_id)

    def delete_queryset(self, request, queryset):
        election_ids = list(queryset.values_list("id", flat=True))
        with transaction.atomic():
            queryset.delete()
            for election_id in election_ids:
                _invalidate_after_commit(election_id)


@admin.register(Constituency)
class ConstituencyAdmin(LargeTableAdmin):
    list_display = (
        "code",
        "name",
        "election",
        "registered_voters",
        "total_votes_cast",
        "participation_rate",
        "anomaly_score",
        "metrics_updated_at",
    )
    list_filter = (ElectionListFilter,)
    list_select_related = ("election",)
    search_fields = ("code", "name")
    autocomplete_fields = ("election",)
    ordering = ("id",)
    metric_fields = CONSTITUENCY_METRIC_FIELDS
    readonly_fields = (*metric_fields, "related_lists")
    fieldsets = (
        (None, {"fields": ("election", "code", "name", "registered_voters")}),
        ("Metrics (written by the metrics engine)", {"fields": (*metric_fields, "related_lists")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The election of an existing constituency is fixed: its transactions point at both.
        return ("election", *self.readonly_fields) if obj else self.readonly_fields

    @admin.display(description="data")
    def related_lists(self, obj: Constituency) -> str:
        if not obj.pk:
            return "-"
        links = [
            ("elections_transaction", "Transactions"),
            ("metrics_hourlystats", "Hourly stats"),
            ("metrics_anomaly", "Anomalies"),
        ]
        params = {ELECTION_PARAMETER: obj.election_id, "constituency": obj.pk}
        return format_html_join(" · ", "{}", ((_changelist_link(name, label, **params),) for name, label in links))

    def get_deleted_objects(self, objs, request):
        return _summarized_deletion(objs, request, constituency_ids=[obj.pk for obj in objs])

    def delete_model(self, request, obj):
        self.delete_queryset(request, Constituency.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        election_ids = set(queryset.values_list("election_id", flat=True))
        with transaction.atomic():
            queryset.delete()
            # The remaining constituencies' spikes were judged against the deleted ones, and
            # the election's totals included them: recompute the election.
            for election_id in election_ids:
                buckets_changed.send(
                    sender=Constituency, election_id=election_id, buckets={(None, None)}, defer_flush=False
                )


@admin.register(Transaction)
class TransactionAdmin(LargeTableAdmin):
    list_display = ("tx_hash", "kind", "timestamp", "hour", "constituency_code", "election_code", "block_number")
    list_filter = (ElectionListFilter, ConstituencyListFilter, "kind")
    list_select_related = ("election", "constituency")
    # Exact matches only: they use the unique index; a LIKE '%...%' scans millions of rows.
    search_fields = ("tx_hash__exact",)
    # ``hour`` rather than ``timestamp``: the (election, hour) index serves the drill-down.
    date_hierarchy = "hour"
    autocomplete_fields = ("election", "constituency")
    readonly_fields = ("hour", "received_at")
    fields = ("tx_hash", "election", "constituency", "kind", "timestamp", "hour", "block_number", "received_at")
    # Only what an index serves once an election is chosen; other sorts are full-table sorts.
    sortable_by = ("hour",)

    def get_readonly_fields(self, request, obj=None):
        # A transaction never moves to another election: the old election's bucket would
        # not be recomputed (its dirty mark would carry the new election's id).
        return ("election", *self.readonly_fields) if obj else self.readonly_fields

    def get_ordering(self, request):
        return ("-hour", "-id") if election_filtered(request) else ("-id",)

    @admin.display(description="constituency", ordering="constituency__code")
    def constituency_code(self, obj: Transaction) -> str:
        return obj.constituency.code

    @admin.display(description="election", ordering="election__code")
    def election_code(self, obj: Transaction) -> str:
        return obj.election.code

    # Above this many, the delete confirmation shows a count instead of every transaction.
    list_deletion_limit = 100

    def get_deleted_objects(self, objs, request):
        # "Select all" on a list of millions must not render millions of lines.
        count = len(objs) if isinstance(objs, list) else objs.count()
        if count <= self.list_deletion_limit:
            return super().get_deleted_objects(objs, request)
        perms_needed = set() if request.user.has_perm("elections.delete_transaction") else {"transaction"}
        return [f"{count} transactions"], {"transactions": count}, perms_needed, []

    def delete_model(self, request, obj):
        transactions_delete(queryset=Transaction.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        transactions_delete(queryset=queryset)


def _summarized_deletion(objs, request, *, election_ids=(), constituency_ids=()):
    """The delete confirmation lists the objects and *counts* what cascades with them;
    Django's default would load and render every one of their millions of transactions."""
    from metrics.models import Anomaly, DirtyBucket, Episode, EpisodeEvent, HourlyStats

    if election_ids:
        scope = {"election_id__in": election_ids}
        cascades = [Constituency, Transaction, HourlyStats, Anomaly, Episode, EpisodeEvent, DirtyBucket]
    else:
        scope = {"constituency_id__in": constituency_ids}
        cascades = [Transaction, HourlyStats, Anomaly, Episode, EpisodeEvent, DirtyBucket]
    model_count = {objs[0]._meta.verbose_name_plural: len(objs)} if objs else {}
    perms_needed = set()
    for model in [type(objs[0]), *cascades] if objs else []:
        opts = model._meta
        if not request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}") and model is not DirtyBucket:
            perms_needed.add(opts.verbose_name)
    for model in cascades:
        count = model.objects.filter(**scope).count()
        if count:
            model_count[model._meta.verbose_name_plural] = count
    to_delete = [format_html("{}: {}", obj._meta.verbose_name.capitalize(), obj) for obj in objs] + [
        f"{count} {name}" for name, count in list(model_count.items())[1:]
    ]
    return to_delete, model_count, perms_needed, []


def _invalidate_after_commit(election_id: int) -> None:
    from metrics.cache import metrics_cache

    transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id))
