from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from elections import selectors, services
from elections.api.exports import ElectionCSVExportMixin
from elections.api.serializers import (
    BulkIngestResultSerializer,
    ConstituencySerializer,
    ElectionSerializer,
    TransactionSerializer,
)
from elections.models import Constituency, Election, IngestSource, Transaction
from elections.permissions import CanCertify

MAX_REPORTED_ERRORS = 50


class UncertifySerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, help_text="Why the certification is lifted (logged).")


class IdFilter(serializers.Serializer):
    # The upper bound is the database's bigint: a larger id would crash the query (a 500).
    election = serializers.IntegerField(required=False, min_value=1, max_value=services.BLOCK_NUMBER_MAX)
    constituency = serializers.IntegerField(required=False, min_value=1, max_value=services.BLOCK_NUMBER_MAX)


class ElectionViewSet(
    ElectionCSVExportMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Elections. POST creates one (ingest permission)."""

    queryset = Election.objects.all()
    serializer_class = ElectionSerializer

    def perform_create(self, serializer):
        services.ingest_scope_check(user=self.request.user)
        serializer.instance = services.election_save(election=Election(**serializer.validated_data))

    @extend_schema(
        request=None,
        responses={200: ElectionSerializer, 409: OpenApiResponse(description="Already certified.")},
        description="Certify the election (staff): its count is final; every later write to it is refused with 409.",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanCertify])
    def certify(self, request, pk=None):
        election = services.election_certify(election_id=self.get_object().pk, user=request.user)
        return Response(ElectionSerializer(election).data)

    @extend_schema(
        request=UncertifySerializer,
        responses={200: ElectionSerializer, 409: OpenApiResponse(description="Not certified.")},
        description="Lift the certification (staff), with a reason that is logged with who and when.",
    )
    @action(detail=True, methods=["post"], permission_classes=[CanCertify])
    def uncertify(self, request, pk=None):
        body = UncertifySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        election = services.election_uncertify(
            election_id=self.get_object().pk, user=request.user, reason=body.validated_data["reason"]
        )
        return Response(ElectionSerializer(election).data)


ELECTION_FILTER = OpenApiParameter("election", int, description="Only this election's.")
CONSTITUENCY_FILTER = OpenApiParameter("constituency", int, description="Only this constituency's.")


@extend_schema_view(list=extend_schema(parameters=[ELECTION_FILTER]))
class ConstituencyViewSet(
    ElectionCSVExportMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Constituencies, filterable by ``election``. POST creates one (ingest permission)."""

    serializer_class = ConstituencySerializer

    def get_queryset(self):
        filters = IdFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = Constituency.objects.all()
        if "election" in filters.validated_data:
            queryset = queryset.filter(election_id=filters.validated_data["election"])
        return queryset

    def perform_create(self, serializer):
        services.ingest_scope_check(user=self.request.user, election_id=serializer.validated_data["election"].pk)
        serializer.instance = services.constituency_save(constituency=Constituency(**serializer.validated_data))


class NewestFirst(CursorPagination):
    """No COUNT(*): the transaction table holds millions of rows."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


# One incoming transaction, as elections.services.transaction_row_parse accepts it.
TRANSACTION_ITEM_SCHEMA = {
    "type": "object",
    "required": ["tx_hash", "constituency", "kind", "timestamp"],
    "properties": {
        "tx_hash": {"type": "string", "maxLength": services.TX_HASH_MAX_LENGTH, "description": "Idempotency key."},
        "constituency": {"type": "integer", "description": "Constituency id."},
        "election": {"type": "integer", "description": "Optional; checked against the constituency's."},
        "kind": {"type": "string", "enum": sorted(services.KINDS)},
        "timestamp": {"type": "string", "format": "date-time", "description": "ISO 8601 with a UTC offset."},
        "block_number": {"type": "integer", "minimum": 0, "nullable": True},
    },
}


@extend_schema_view(list=extend_schema(parameters=[ELECTION_FILTER, CONSTITUENCY_FILTER]))
class TransactionViewSet(ElectionCSVExportMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Transactions. POST one object, or a list of up to 10,000 (all-or-nothing; a tx_hash
    already stored counts as a duplicate, not an error). GET lists the newest first."""

    serializer_class = TransactionSerializer
    pagination_class = NewestFirst
    csv_ordering = ("-id",)

    def get_queryset(self):
        filters = IdFilter(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = Transaction.objects.all()
        for name, value in filters.validated_data.items():
            queryset = queryset.filter(**{f"{name}_id": value})
        return queryset

    @extend_schema(
        request={
            "application/json": {
                "oneOf": [
                    TRANSACTION_ITEM_SCHEMA,
                    {
                        "type": "array",
                        "items": TRANSACTION_ITEM_SCHEMA,
                        "minItems": 1,
                        "maxItems": services.max_ingest_batch(),
                    },
                ]
            }
        },
        responses={
            200: OpenApiResponse(TransactionSerializer, description="This tx_hash was already stored."),
            201: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="TransactionIngestResult",
                    serializers=[TransactionSerializer, BulkIngestResultSerializer],
                    resource_type_field_name=None,
                ),
                description="One object: the stored transaction. A list: created and duplicates counts.",
            ),
            400: OpenApiResponse(description="Invalid item(s); nothing was stored."),
        },
        description="One transaction object, or a JSON list of up to 10,000 (answered with created/duplicates).",
    )
    def create(self, request, *args, **kwargs):
        data = request.data
        if isinstance(data, list):
            return self._create_many(data)
        if not isinstance(data, dict):
            return Response({"non_field_errors": ["Expected a JSON object or a list of them."]}, status=400)
        lookup = services.constituency_lookup_by_id([data.get("constituency")])
        try:
            row = services.transaction_row_parse(data, constituency_lookup=lookup)
        except services.RowError as error:
            return Response({error.field: [error.message]}, status=status.HTTP_400_BAD_REQUEST)
        services.ingest_scope_check(user=request.user, rows=[row])
        stored, created = services.transaction_create(row=row, origin=self._origin(request))
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(TransactionSerializer(stored).data, status=code)

    @staticmethod
    def _origin(request) -> services.Origin:
        return services.Origin(IngestSource.API, user=request.user, label=f"{request.method} {request.path}")

    def _create_many(self, items: list):
        limit = services.max_ingest_batch()
        if not items:
            return Response({"non_field_errors": ["Send at least one transaction."]}, status=400)
        if len(items) > limit:
            return Response(
                {"non_field_errors": [f"At most {limit} transactions per request; got {len(items)}."]}, status=400
            )
        lookup = services.constituency_lookup_by_id(
            item.get("constituency") for item in items if isinstance(item, dict)
        )
        window = selectors.election_window_lookup()
        rows, errors = [], []
        parse, append = services.transaction_row_parse, rows.append
        for index, item in enumerate(items):
            try:
                append(parse(item, constituency_lookup=lookup, election_window=window))
            except services.RowError as error:
                errors.append({"index": index, "field": error.field, "message": error.message})
        if errors:
            first = errors[0]
            return Response(
                {
                    "detail": f"Item {first['index']} is invalid ({first['field']}: {first['message']}); "
                    f"{len(errors)} invalid item(s) in all; nothing was stored.",
                    "errors": errors[:MAX_REPORTED_ERRORS],
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        services.ingest_scope_check(user=self.request.user, rows=rows)
        result = services.transactions_ingest(rows=rows, origin=self._origin(self.request))  # all-or-nothing
        body = BulkIngestResultSerializer({"created": result.created, "duplicates": result.duplicates}).data
        return Response(body, status=status.HTTP_201_CREATED)
