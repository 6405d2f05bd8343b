"""Admin building blocks for tables with millions of rows (SPEC section 9).

Django's changelist counts every row of the table on each page view and renders every
related object as a filter option; on the transaction table both take seconds. These
pieces keep a list page to a handful of index-backed queries whatever the table size.
"""

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, ShowFacets
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

from elections.models import Constituency

ELECTION_PARAMETER = "election__id__exact"


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered PostgreSQL list from the planner's statistics (pg_class.reltuples),
    which costs nothing, instead of COUNT(*) over the whole table.

    Filtered lists (an election, a constituency, a search, a date) are counted exactly: the
    filters are index-backed, and an exact count of what was asked for is worth its cost.
    Small tables and SQLite are always counted exactly. The estimate is only used for the
    page links, so being a little off just means the last page is shorter or empty.
    """

    # Below this a COUNT(*) is cheap, and an exact number is nicer than an estimate.
    estimate_threshold = 100_000

    @cached_property
    def count(self) -> int:
        estimate = self.estimated_count()
        if estimate is not None and estimate >= self.estimate_threshold:
            return estimate
        return super().count

    def estimated_count(self) -> int | None:
        """The planner's row estimate of an unfiltered queryset's table, or None."""
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is None or query.where or query.distinct or query.combinator:
            return None
        if query.low_mark or query.high_mark is not None:
            return None
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        # Subtle: reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL 14+).
        if row is None or row[0] is None or row[0] < 0:
            return None
        return int(row[0])


class LargeTableAdmin(admin.ModelAdmin):
    """A changelist that stays a few index-backed queries on a table of millions of rows."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False  # no second COUNT(*) of the unfiltered table
    show_facets = ShowFacets.NEVER  # facets are one COUNT per filter option
    list_per_page = 100
    list_max_show_all = 1000


class ConstituencyListFilter(admin.SimpleListFilter):
    """Constituencies of the election chosen in the election filter.

    Listing every constituency of every election would render thousands of options, so
    nothing is offered until an election is chosen, and an election with more than
    ``max_options`` constituencies offers only the selected one (the search box and the
    links from the constituency page filter the rest: ``?constituency=<id>``).
    """

    title = "constituency"
    parameter_name = "constituency"
    max_options = 200

    def lookups(self, request, model_admin):
        raw_selected = request.GET.get(self.parameter_name)
        selected = _int_or_none(raw_selected)
        election_id = _int_or_none(request.GET.get(ELECTION_PARAMETER))
        options = []
        if election_id is not None:
            options = list(
                Constituency.objects.filter(election_id=election_id)
                .order_by("code")
                .values_list("id", "code", "name")[: self.max_options + 1]
            )
            if len(options) > self.max_options:
                options = []
        choices = [(str(pk), f"{code} ({name})") for pk, code, name in options]
        if raw_selected is not None and all(pk != selected for pk, _, _ in options):
            # Subtle: a filter without choices is dropped by the changelist, and the list
            # would silently show everything; the selected value always stays a choice.
            found = Constituency.objects.filter(pk=selected).values_list("code", "name").first() if selected else None
            choices.append((raw_selected, f"{found[0]} ({found[1]})" if found else f"{raw_selected} (not found)"))
        return choices

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        constituency_id = _int_or_none(self.value())
        if constituency_id is None:
            raise IncorrectLookupParameters(f"constituency must be an id, not {self.value()!r}")
        return queryset.filter(constituency_id=constituency_id)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def election_filtered(request) -> bool:
    """True when the changelist is narrowed to one election (its indexes lead with it)."""
    return _int_or_none(request.GET.get(ELECTION_PARAMETER)) is not None
