"""Admin for what was observed.

Every add, change and delete goes through the elections service layer, the one write path
(the metrics app learns of it there, never from here). Nothing here inlines the thousands of
rows an election owns; pages link to filtered lists, and apps above this one add theirs.
"""

from contextlib import contextmanager

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import CASCADE, Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from election_monitor.exceptions import ServiceError
from elections import services
from elections.admin_utils import (
    ELECTION_PARAMETER,
    ConstituencyListFilter,
    ElectionListFilter,
    LargeTableAdmin,
    election_filtered,
)
from elections.models import (
    CONSTITUENCY_METRIC_FIELDS,
    AuditEntry,
    CertificationEvent,
    Constituency,
    Election,
    ElectionStatus,
    IngestBatch,
    IngestGrant,
    Transaction,
    grace_period,
)


@contextmanager
def refusals_shown(model_admin, request):
    """A write the service layer refuses (a certified election) becomes an error message on
    the page instead of a 500; nothing was changed."""
    try:
        yield
    except ServiceError as error:
        model_admin.message_user(request, error.message, messages.ERROR)


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


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason (to un-certify)", max_length=2000)


@admin.register(Election)
class ElectionAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "timezone", "starts_at", "ends_at", "status", "constituency_count")
    list_filter = (ElectionStatusFilter,)
    search_fields = ("code", "name")
    date_hierarchy = "starts_at"
    ordering = ("-starts_at", "-id")
    readonly_fields = ("status", "created_at", "related_lists")
    fields = ("code", "name", "timezone", "starts_at", "ends_at", "status", "created_at", "related_lists")
    # (admin URL name, label) of the lists linked from an election's page; apps that derive
    # data from elections extend it.
    related_changelists = (("elections_transaction", "Transactions"),)
    action_form = ReasonActionForm
    actions = ("certify", "uncertify")

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
            *self.related_changelists,
        ]
        return format_html_join(
            " · ", "{}", ((_changelist_link(name, label, **{ELECTION_PARAMETER: obj.pk}),) for name, label in links)
        )

    def save_model(self, request, obj, form, change):
        services.election_save(election=obj, user=request.user)

    def get_deleted_objects(self, objs, request):
        return _summarized_deletion(objs, request, election_ids=[obj.pk for obj in objs])

    def delete_model(self, request, obj):
        self.delete_queryset(request, Election.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        with refusals_shown(self, request):
            services.elections_delete(queryset=queryset, user=request.user)

    @admin.action(description="Certify the selected elections (their count is final)")
    def certify(self, request, queryset):
        for election in queryset.order_by("id"):
            with refusals_shown(self, request):
                services.election_certify(election_id=election.pk, user=request.user)
                self.message_user(request, f"Certified {election.code}.", messages.SUCCESS)

    @admin.action(description="Un-certify the selected elections (give the reason above)")
    def uncertify(self, request, queryset):
        reason = request.POST.get("reason", "")
        for election in queryset.order_by("id"):
            with refusals_shown(self, request):
                services.election_uncertify(election_id=election.pk, user=request.user, reason=reason)
                self.message_user(request, f"Un-certified {election.code}: {reason}", messages.SUCCESS)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("elections.certify_election"):
            actions.pop("certify", None)
            actions.pop("uncertify", None)
        return actions

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.certified_at)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.certified_at)


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
    related_changelists = (("elections_transaction", "Transactions"),)
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
        params = {ELECTION_PARAMETER: obj.election_id, "constituency": obj.pk}
        return format_html_join(
            " · ", "{}", ((_changelist_link(name, label, **params),) for name, label in self.related_changelists)
        )

    def save_model(self, request, obj, form, change):
        services.constituency_save(constituency=obj, user=request.user)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.election.certified_at)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.election.certified_at)

    def get_deleted_objects(self, objs, request):
        return _summarized_deletion(objs, request, constituency_ids=[obj.pk for obj in objs])

    def delete_model(self, request, obj):
        self.delete_queryset(request, Constituency.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        with refusals_shown(self, request):
            services.constituencies_delete(queryset=queryset, user=request.user)


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

    def save_model(self, request, obj, form, change):
        services.transaction_save(instance=obj, user=request.user)

    def delete_model(self, request, obj):
        self.delete_queryset(request, Transaction.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        with refusals_shown(self, request):
            services.transactions_delete(queryset=queryset, user=request.user)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.election.certified_at)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.election.certified_at)


def _summarized_deletion(objs, request, *, election_ids=(), constituency_ids=()):
    """The delete confirmation lists the objects and *counts* what cascades with them;
    Django's default would load and render every one of their millions of transactions.

    What cascades is found from the model relations, so rows other apps keep per election
    or constituency are counted without this app knowing them."""
    if not objs:
        return [], {}, set(), []
    model = type(objs[0])
    scope = {"election_id__in": election_ids} if election_ids else {"constituency_id__in": constituency_ids}
    cascades = [
        relation.related_model
        for relation in model._meta.related_objects
        if relation.on_delete is CASCADE and relation.field.attname in ("election_id", "constituency_id")
    ]
    model_count = {model._meta.verbose_name_plural: len(objs)}
    perms_needed = set()
    for counted in [model, *cascades]:
        opts = counted._meta
        if not request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}"):
            perms_needed.add(opts.verbose_name)
    for counted in cascades:
        count = counted.objects.filter(**scope).count()
        if count:
            model_count[counted._meta.verbose_name_plural] = count
    to_delete = [format_html("{}: {}", obj._meta.verbose_name.capitalize(), obj) for obj in objs] + [
        f"{count} {name}" for name, count in list(model_count.items())[1:]
    ]
    return to_delete, model_count, perms_needed, []


class AppendOnlyAdmin(admin.ModelAdmin):
    """Logs: readable in the admin, never added, edited or deleted there."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "username", "action", "model", "object_id", "object_repr")
    list_filter = ("action", "model")
    search_fields = ("username", "object_repr")
    date_hierarchy = "created_at"


@admin.register(CertificationEvent)
class CertificationEventAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "election", "action", "user", "reason")
    list_filter = ("action",)
    list_select_related = ("election", "user")


@admin.register(IngestBatch)
class IngestBatchAdmin(AppendOnlyAdmin):
    list_display = ("id", "created_at", "election", "source", "user", "label", "created", "duplicates", "conflicts")
    list_filter = ("source", ElectionListFilter)
    list_select_related = ("election", "user")
    search_fields = ("label",)


@admin.register(IngestGrant)
class IngestGrantAdmin(admin.ModelAdmin):
    """Limits a user's ingest credential to elections or constituencies (see the README)."""

    list_display = ("user", "election", "constituency")
    list_select_related = ("user", "election", "constituency")
    autocomplete_fields = ("election", "constituency")
    raw_id_fields = ("user",)
