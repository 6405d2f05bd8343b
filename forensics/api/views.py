"""The forensics API (SPEC section 11): thin declarations over forensics.selectors.

Each view validates its path and query parameters (a 400 names the bad one), calls one
selector and answers JSON, or a PNG picture with ``?format=png`` where the spec draws one.
"""

import json

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from elections.models import Election
from forensics import reconciliation, selectors
from forensics.api.serializers import (
    FingerprintQuerySerializer,
    FingerprintSerializer,
    HistogramQuerySerializer,
    HistogramSerializer,
    IntegerExcessQuerySerializer,
    IntegerExcessSerializer,
    ReconciliationPageSerializer,
    SummarySerializer,
)

ID_MAX = 2**63 - 1
ELECTION_ID = OpenApiParameter(
    "election_id",
    {"type": "integer", "minimum": 1, "maximum": ID_MAX},
    OpenApiParameter.PATH,
    description="Election id.",
)
FORMAT = OpenApiParameter(
    "format", str, OpenApiParameter.QUERY, enum=["json", "png"], description="png: the figure as a picture."
)
ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid parameters: field name → messages."),
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="No credentials (anonymous reads off)."),
    403: OpenApiResponse(OpenApiTypes.OBJECT, description="Not allowed."),
    404: OpenApiResponse(OpenApiTypes.OBJECT, description="No such election, or no protocols imported for it."),
}
PNG_RESPONSE = {(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The figure as a PNG picture.")}


class PNGRenderer(BaseRenderer):
    """Sends a picture's bytes; an error answered to a PNG request goes out as JSON."""

    media_type = "image/png"
    format = "png"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


class ForensicsView(APIView):
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force=force)
        except Http404:
            # DRF answers an unknown ?format= with 404; it is a bad parameter.
            formats = ", ".join(r.format for r in self.get_renderers())
            raise ValidationError({"format": [f"Unknown format; use one of: {formats}."]}) from None

    def election_id(self) -> int:
        text = self.kwargs["election_id"]
        if not (text.isascii() and text.isdigit()) or text.startswith("0") or int(text) > ID_MAX:
            raise ValidationError({"election_id": [f"'{text}' is not a valid election id; ids are positive integers."]})
        election_id = int(text)
        if not Election.objects.filter(pk=election_id).exists():
            raise NotFound(f"No election with id {election_id}.")
        return election_id

    def params(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @property
    def wants_png(self) -> bool:
        return self.request.accepted_renderer.format == "png"

    def figure(self, select, **params) -> Response:
        try:
            return Response(select(**params))
        except selectors.NoProtocols as error:
            raise NotFound(str(error)) from None


class PictureView(ForensicsView):
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, PNGRenderer]


class SummaryView(ForensicsView):
    """Stations, registered voters, ballots, turnout and the leader's result from the protocols."""

    @extend_schema(parameters=[ELECTION_ID], responses={200: SummarySerializer, **ERRORS})
    def get(self, request, election_id):
        return self.figure(selectors.summary_get, election_id=self.election_id())


class HistogramView(PictureView):
    """Stations and their registered voters per turnout or leader's-result bin, 0 to 100 %."""

    @extend_schema(
        parameters=[ELECTION_ID, HistogramQuerySerializer, FORMAT],
        responses={200: HistogramSerializer, **PNG_RESPONSE, **ERRORS},
    )
    def get(self, request, election_id):
        election = self.election_id()
        params = self.params(HistogramQuerySerializer)
        return self.figure(
            selectors.histogram_get, election_id=election, of=params["of"], bin_width=params["bin"], png=self.wants_png
        )


class FingerprintView(PictureView):
    """Registered voters per (turnout, leader's result) cell: the election's fingerprint."""

    @extend_schema(
        parameters=[ELECTION_ID, FingerprintQuerySerializer, FORMAT],
        responses={200: FingerprintSerializer, **PNG_RESPONSE, **ERRORS},
    )
    def get(self, request, election_id):
        election = self.election_id()
        params = self.params(FingerprintQuerySerializer)
        return self.figure(selectors.fingerprint_get, election_id=election, bin_width=params["bin"], png=self.wants_png)


class IntegerExcessView(PictureView):
    """Stations at integer percentages, observed against a binomial Monte Carlo baseline."""

    @extend_schema(
        parameters=[ELECTION_ID, IntegerExcessQuerySerializer, FORMAT],
        responses={200: IntegerExcessSerializer, **PNG_RESPONSE, **ERRORS},
    )
    def get(self, request, election_id):
        election = self.election_id()
        params = self.params(IntegerExcessQuerySerializer)
        return self.figure(
            selectors.integer_excess_get,
            election_id=election,
            reps=params["reps"],
            seed=params["seed"],
            png=self.wants_png,
        )


class ReconciliationView(ForensicsView):
    """Stream against protocol per constituency (paginated) and the election's totals."""

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    @extend_schema(parameters=[ELECTION_ID], responses={200: ReconciliationPageSerializer, **ERRORS})
    def get(self, request, election_id):
        election = self.election_id()
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(reconciliation.reconciliation_rows(election_id=election), request, view=self)
        response = paginator.get_paginated_response([reconciliation.reconciliation_item(row) for row in page])
        response.data = {
            "election_id": election,
            **response.data,
            "totals": reconciliation.reconciliation_totals(election_id=election),
        }
        return response
