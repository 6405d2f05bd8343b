"""The metrics API: thin declarations over metrics.selectors.

Each read view validates its path and query parameters with a filter serializer, calls one
selector and serializes the result. Cached reads answer with an ETag and honour
If-None-Match with 304 Not Modified.
"""

import hashlib
import logging
from functools import cached_property

from django.db.models import QuerySet
from django.http import HttpResponseNotModified
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from kombu.exceptions import OperationalError as BrokerOperationalError
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from election_monitor.csv_export import STREAM_CHUNK_ROWS
from election_monitor.resilience import broker_breaker
from elections.api.exports import ElectionCSVExportMixin
from elections.permissions import IsStaff
from metrics import selectors
from metrics.api.serializers import (
    AnomalyFilterSerializer,
    AnomalySerializer,
    ConstituencyMetricsDetailSerializer,
    ConstituencyMetricsSerializer,
    ConstituencyOrderingSerializer,
    ConstituencyPathSerializer,
    DashboardDetailedSerializer,
    DashboardSummarySerializer,
    ElectionMetricsSerializer,
    ElectionPathSerializer,
    EpisodeFilterSerializer,
    EpisodeSerializer,
    ErrorSerializer,
    HourlyStatsSerializer,
    RecomputeAcceptedSerializer,
    RecomputeRequestSerializer,
    TimePeriodFilterSerializer,
    TimePeriodSerializer,
    TimeRangeFilterSerializer,
)
from metrics.cache import CachedRead

logger = logging.getLogger(__name__)

# Representations of cached values by (serializer, ETag), per process; cleared when full (a
# version bump makes the old ETags unreachable, so nothing here is ever stale, only unused).
REPRESENTATIONS_MAX = 512
_REPRESENTATIONS: dict[tuple, "Representation"] = {}

ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": selectors.ID_MAX}
ELECTION_ID = OpenApiParameter("election_id", ID_SCHEMA, OpenApiParameter.PATH, description="Election id.")
CONSTITUENCY_ID = OpenApiParameter("constituency_id", ID_SCHEMA, OpenApiParameter.PATH, description="Constituency id.")
BAD_REQUEST = OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid parameters: field name → messages.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such election/constituency, or no such page.")
NOT_MODIFIED = OpenApiResponse(description="The ETag in If-None-Match is still current.")
ERRORS = {400: BAD_REQUEST, 401: ErrorSerializer, 403: ErrorSerializer, 404: NOT_FOUND, 429: ErrorSerializer}


class Representation:
    """A cached value's serialized data, and its plain JSON rendering once it has been made."""

    __slots__ = ("data", "json")

    def __init__(self, data):
        self.data, self.json = data, None


class RepresentationResponse(Response):
    """Plain JSON, what API clients ask for, is rendered once per representation: a cache hit
    then sends stored bytes. Any other negotiated rendering (the browsable API, an ``indent``
    parameter) renders the data as usual."""

    def __init__(self, representation: Representation):
        super().__init__(representation.data)
        self.representation = representation

    @property
    def rendered_content(self):
        renderer = self.accepted_renderer
        if type(renderer) is not JSONRenderer or self.accepted_media_type != renderer.media_type:
            return super().rendered_content
        if self.representation.json is None:
            self.representation.json = super().rendered_content
        else:
            self["Content-Type"] = renderer.media_type  # as Response.rendered_content sets it
        return self.representation.json


def validated(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ReadView(ElectionCSVExportMixin, APIView):
    """Shared plumbing: parameter validation, pagination, CSV exports and conditional
    responses for cached reads. An APIView, not a GenericAPIView: there is no queryset to
    declare, the selectors are the only way to the data."""

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @cached_property
    def paginator(self):
        return self.pagination_class()

    def params(self, serializer_class) -> dict:
        return validated(serializer_class, self.request.query_params)

    def path(self, serializer_class) -> dict:
        # Plain decimal ids in range, nearly every request, are what the serializer would
        # return; building a serializer (it deep-copies its fields) was a tenth of a cached
        # read. Anything else goes through it for its messages.
        (name,) = self.kwargs
        text = self.kwargs[name]
        if text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 19 and int(text) <= selectors.ID_MAX:
            return {name: int(text)}
        serializer = serializer_class(data=self.kwargs)
        if not serializer.is_valid():
            if any(
                getattr(error, "code", None) == "max_value" for errors in serializer.errors.values() for error in errors
            ):
                # A well-formed id beyond any stored one names a missing object: 404, not 400.
                raise NotFound(f"No {name.removesuffix('_id')} with id {text}.")
            raise ValidationError(serializer.errors)
        return serializer.validated_data

    def etag(self, cached: CachedRead) -> str:
        # One representation per (value, URL with its query, renderer): a page of a list,
        # or the browsable HTML, must not validate against another's ETag.
        variant = f"{cached.etag}|{self.request.get_full_path()}|{self.request.accepted_renderer.format}"
        return '"' + hashlib.sha1(variant.encode(), usedforsecurity=False).hexdigest()[:32] + '"'

    def conditional(self, cached: CachedRead, render):
        """304 if the client's If-None-Match holds the current ETag, else ``render()``."""
        etag = self.etag(cached)
        header = self.request.META.get("HTTP_IF_NONE_MATCH")
        wanted = parse_etags(header) if header else ()
        if "*" in wanted or etag in wanted or f"W/{etag}" in wanted:
            response = HttpResponseNotModified()
        else:
            response = render()
        response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        return response

    def represent(self, cached: CachedRead, serializer_class) -> Response:
        """The serialized form of a cached value, serialized once per process: the value's
        ETag names exactly one computation, so its representation never changes. Serializing
        on every hit was most of a cached read's cost (docs/PERFORMANCE.md, cached reads)."""
        key = (serializer_class, cached.etag)
        representation = _REPRESENTATIONS.get(key)
        if representation is None:
            representation = Representation(serializer_class(cached.value).data)
            if len(_REPRESENTATIONS) >= REPRESENTATIONS_MAX:
                _REPRESENTATIONS.clear()
            _REPRESENTATIONS[key] = representation
        return RepresentationResponse(representation)

    def paginated(self, rows, serializer_class):
        """A page of the rows; a CSV export streams all of them, from a database iterator
        when they are a queryset (the whole election's hourly stats in constant memory)."""
        if self.wants_csv():
            items = rows.iterator(chunk_size=STREAM_CHUNK_ROWS) if isinstance(rows, QuerySet) else rows
            return self.csv_stream(items, serializer_class, filename=self.csv_filename())
        page = self.paginator.paginate_queryset(rows, self.request, view=self)
        return self.paginator.get_paginated_response(serializer_class(page, many=True).data)


# --- hourly stats -----------------------------------------------------------------------------------


class HourlyStatsByConstituencyView(ReadView):
    """Hourly statistics of one constituency, ordered by hour; ``start_time`` <= hour < ``end_time``."""

    @extend_schema(
        parameters=[CONSTITUENCY_ID, TimeRangeFilterSerializer],
        responses={200: HourlyStatsSerializer(many=True), **ERRORS},
    )
    def get(self, request, constituency_id):
        path = self.path(ConstituencyPathSerializer)
        rows = selectors.hourly_stats_list(**path, **self.params(TimeRangeFilterSerializer))
        return self.paginated(rows, HourlyStatsSerializer)


class HourlyStatsByElectionView(ReadView):
    """Hourly statistics of every constituency of an election, ordered by hour then constituency."""

    @extend_schema(
        parameters=[ELECTION_ID, TimeRangeFilterSerializer],
        responses={200: HourlyStatsSerializer(many=True), **ERRORS},
    )
    def get(self, request, election_id):
        path = self.path(ElectionPathSerializer)
        rows = selectors.hourly_stats_list(**path, **self.params(TimeRangeFilterSerializer))
        return self.paginated(rows, HourlyStatsSerializer)


# --- constituency metrics ------------------------------------------------------------------------


class ConstituencyMetricsView(ReadView):
    """A constituency's totals, participation, anomaly score and hour-of-day activity
    (local hours of the election's timezone). Cached; supports If-None-Match."""

    @extend_schema(
        parameters=[CONSTITUENCY_ID],
        responses={200: ConstituencyMetricsDetailSerializer, 304: NOT_MODIFIED, **ERRORS},
    )
    def get(self, request, constituency_id):
        cached = selectors.constituency_metrics_get(**self.path(ConstituencyPathSerializer))
        return self.conditional(cached, lambda: self.represent(cached, ConstituencyMetricsDetailSerializer))


class ConstituencyTimePeriodView(ReadView):
    """A constituency's activity rolled up by local hour, day, ISO week or month: counts
    summed, participation cumulative at the end of each period; only periods with data."""

    @extend_schema(
        parameters=[CONSTITUENCY_ID, TimePeriodFilterSerializer],
        responses={200: TimePeriodSerializer, 304: NOT_MODIFIED, **ERRORS},
    )
    def get(self, request, constituency_id):
        path = self.path(ConstituencyPathSerializer)
        cached = selectors.constituency_time_period_get(**path, **self.params(TimePeriodFilterSerializer))
        return self.conditional(cached, lambda: self.represent(cached, TimePeriodSerializer))


# --- election metrics -------------------------------------------------------------------------------


class ElectionMetricsView(ReadView):
    """An election's totals over its constituencies, status and hourly turnout curve.
    Cached; supports If-None-Match."""

    @extend_schema(
        parameters=[ELECTION_ID],
        responses={200: ElectionMetricsSerializer, 304: NOT_MODIFIED, **ERRORS},
    )
    def get(self, request, election_id):
        cached = selectors.election_metrics_get(**self.path(ElectionPathSerializer))
        return self.conditional(cached, lambda: self.represent(cached, ElectionMetricsSerializer))


class ElectionConstituenciesView(ReadView):
    """Metrics of every constituency of an election, paginated, sorted by ``ordering``."""

    @extend_schema(
        parameters=[ELECTION_ID, ConstituencyOrderingSerializer],
        responses={200: ConstituencyMetricsSerializer(many=True), 304: NOT_MODIFIED, **ERRORS},
    )
    def get(self, request, election_id):
        path = self.path(ElectionPathSerializer)
        rows, cached = selectors.election_constituency_metrics_get(
            **path, **self.params(ConstituencyOrderingSerializer)
        )
        return self.conditional(cached, lambda: self.paginated(rows, ConstituencyMetricsSerializer))


# --- dashboards and anomalies ----------------------------------------------------------------------


class DashboardSummaryView(ReadView):
    """Totals over every election. Cached; supports If-None-Match."""

    @extend_schema(responses={200: DashboardSummarySerializer, 304: NOT_MODIFIED, **ERRORS})
    def get(self, request):
        cached = selectors.dashboard_summary_get()
        return self.conditional(cached, lambda: self.represent(cached, DashboardSummarySerializer))


class DashboardDetailedView(ReadView):
    """The summary, each election's metrics, the most anomalous constituencies and the
    latest anomalies. Cached; supports If-None-Match."""

    @extend_schema(responses={200: DashboardDetailedSerializer, 304: NOT_MODIFIED, **ERRORS})
    def get(self, request):
        cached = selectors.dashboard_detailed_get()
        return self.conditional(cached, lambda: self.represent(cached, DashboardDetailedSerializer))


class AnomalyListView(ReadView):
    """Anomalies, latest hour first, filterable by election, constituency and kind."""

    @extend_schema(parameters=[AnomalyFilterSerializer], responses={200: AnomalySerializer(many=True), **ERRORS})
    def get(self, request):
        rows = selectors.anomaly_list(**self._filters())
        return self.paginated(rows, AnomalySerializer)

    def _filters(self) -> dict:
        params = self.params(AnomalyFilterSerializer)
        return {
            "election_id": params.get("election"),
            "constituency_id": params.get("constituency"),
            "kind": params.get("kind"),
        }


class EpisodeListView(ReadView):
    """Anomaly episodes (runs of flagged hours), newest first, filterable by election,
    constituency, kind and whether still open. Cached; supports If-None-Match."""

    @extend_schema(
        parameters=[EpisodeFilterSerializer],
        responses={200: EpisodeSerializer(many=True), 304: NOT_MODIFIED, **ERRORS},
    )
    def get(self, request):
        params = self.params(EpisodeFilterSerializer)
        cached = selectors.episode_list_get(
            election_id=params.get("election"),
            constituency_id=params.get("constituency"),
            kind=params.get("kind"),
            open=params.get("open"),
        )
        return self.conditional(cached, lambda: self.paginated(cached.value, EpisodeSerializer))


# --- writes ------------------------------------------------------------------------------------------


class RecomputeView(GenericAPIView):
    """Queue a recompute of an election, or of one constituency (staff only)."""

    permission_classes = [IsStaff]
    serializer_class = RecomputeRequestSerializer

    @extend_schema(
        responses={
            202: RecomputeAcceptedSerializer,
            400: OpenApiResponse(description="Neither election nor constituency, or they do not match."),
            401: OpenApiResponse(description="No credentials."),
            403: OpenApiResponse(description="Not staff."),
            503: OpenApiResponse(description="The task queue is unavailable."),
        }
    )
    def post(self, request):
        from metrics.tasks import recompute_election

        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        constituency = serializer.validated_data.get("constituency")
        election_id = constituency.election_id if constituency else serializer.validated_data["election"].id
        constituency_id = constituency.id if constituency else None
        try:
            result = broker_breaker().call(recompute_election.delay, election_id, constituency_id)
        except (BrokerOperationalError, ConnectionError):
            logger.exception("could not queue a recompute of election %s", election_id)
            return Response(
                {"detail": "The task queue is unavailable; try again shortly."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        body = {"task_id": result.id, "election_id": election_id, "constituency_id": constituency_id}
        return Response(RecomputeAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)
