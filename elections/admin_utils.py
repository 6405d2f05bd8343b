"""Admin building blocks for tables with millions of rows.

Django's changelist counts every row of the table on each page view and renders every
related object as a filter option; on the transaction table both take seconds. These
pieces keep a list page to a handful of index-backed queries whatever the table size.
"""

import json
from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters, ShowFacets
from django.core.paginator import Paginator
from django.db import connections
from django.utils import timezone
from django.utils.functional import cached_property

from elections.models import Constituency, Election

ELECTION_PARAMETER = "election__id__exact"


class EstimatedCountPaginator(Paginator):
    """Counts big PostgreSQL lists from the planner instead of COUNT(*) over millions of rows.

    Unfiltered: the table's row estimate (pg_class.reltuples), which costs nothing.
    Filtered (an election, a constituency, a date, a search): counted exactly up to
    ``estimate_threshold`` rows (a COUNT over a LIMIT, so bounded work), and beyond that the
    planner's estimate for the filtered query. SQLite and small results are always exact.
    The number only drives the page links: if it is a little off, the last page is shorter
    or empty, never wrong.
    """

    # Below this a COUNT(*) is cheap, and an exact number is nicer than an estimate.
    estimate_threshold = 100_000

    @cached_property
    def count(self) -> int:
        estimate = self.estimated_count()
        if estimate is not None and estimate >= self.estimate_threshold:
            return estimate
        if estimate is None and self._is_postgresql_queryset():
            bounded = self.object_list.order_by()[: self.estimate_threshold].count()
            if bounded < self.estimate_threshold:
                return bounded
            return max(self.planner_rows(), self.estimate_threshold)
        return super().count

    def _is_postgresql_queryset(self) -> bool:
        return hasattr(self.object_list, "query") and connections[self.object_list.db].vendor == "postgresql"

    def planner_rows(self) -> int:
        """The planner's row estimate for the (filtered) queryset: an EXPLAIN, no execution."""
        plan = json.loads(self.object_list.order_by().explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])

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

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        if changelist.date_hierarchy:
            # Django builds the drill-down links with MIN/MAX and SELECT DISTINCT over every
            # matching row (seconds on millions). Our tables' time indexes lead with the
            # election, so the links are offered once an election is chosen, and found by
            # index probes; the date filters themselves work either way.
            if election_filtered(request):
                changelist.queryset = ProbedDates(changelist.queryset)
            else:
                changelist.date_hierarchy = None
        return changelist


class ProbedDates:
    """Answers the two questions Django's date_hierarchy tag asks of ``changelist.queryset``
    (first/last value, and the distinct years, months or days) with ``ORDER BY field LIMIT
    1`` probes, one per period found, instead of scanning every row."""

    max_periods = 400

    def __init__(self, queryset):
        self.queryset = queryset

    def aggregate(self, **aggregates) -> dict:
        bounds = {"first": "", "last": "-"}
        result = {}
        for name, aggregate in aggregates.items():
            field = aggregate.source_expressions[0].name
            result[name] = self._first(f"{bounds[name]}{field}", self.queryset)
        return result

    def datetimes(self, field: str, kind: str) -> list[datetime]:
        tz = timezone.get_current_timezone()
        found: list[datetime] = []
        queryset = self.queryset
        while len(found) < self.max_periods:
            value = self._first(field, queryset)
            if value is None:
                break
            start = _period_start(timezone.localtime(value, tz), kind)
            found.append(start)
            queryset = self.queryset.filter(**{f"{field}__gte": _next_period(start, kind)})
        return found

    @staticmethod
    def _first(order: str, queryset):
        return queryset.order_by(order).values_list(order.lstrip("-"), flat=True).first()


def _period_start(local: datetime, kind: str) -> datetime:
    naive = {
        "year": datetime(local.year, 1, 1),
        "month": datetime(local.year, local.month, 1),
        "day": datetime(local.year, local.month, local.day),
    }[kind]
    return timezone.make_aware(naive, local.tzinfo)


def _next_period(start: datetime, kind: str) -> datetime:
    naive = start.replace(tzinfo=None)
    if kind == "year":
        naive = naive.replace(year=naive.year + 1)
    elif kind == "month":
        naive = naive.replace(year=naive.year + naive.month // 12, month=naive.month % 12 + 1)
    else:
        naive += timedelta(days=1)
    return timezone.make_aware(naive, start.tzinfo)


class ElectionListFilter(admin.SimpleListFilter):
    """Filter by election, always applied.

    Subtle: Django's related-field filter hides itself, and then silently ignores its
    parameter, when there is only one election; the list would then lose the election
    condition that its ordering and the time-index probes below rely on.
    """

    title = "election"
    parameter_name = ELECTION_PARAMETER

    def lookups(self, request, model_admin):
        return [
            (str(pk), code) for pk, code in Election.objects.order_by("-starts_at", "-id").values_list("id", "code")
        ]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        election_id = _int_or_none(self.value())
        if election_id is None:
            raise IncorrectLookupParameters(f"election must be an id, not {self.value()!r}")
        return queryset.filter(election_id=election_id)


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
