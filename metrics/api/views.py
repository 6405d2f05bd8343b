import logging

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from elections.models import Constituency, Election
from elections.permissions import IsStaff

logger = logging.getLogger(__name__)


class RecomputeRequestSerializer(serializers.Serializer):
    election = serializers.PrimaryKeyRelatedField(queryset=Election.objects.all(), required=False)
    constituency = serializers.PrimaryKeyRelatedField(queryset=Constituency.objects.all(), required=False)

    def validate(self, attrs):
        election, constituency = attrs.get("election"), attrs.get("constituency")
        if not election and not constituency:
            raise serializers.ValidationError({"non_field_errors": ["Give an election or a constituency."]})
        if election and constituency and constituency.election_id != election.id:
            raise serializers.ValidationError({"constituency": ["This constituency belongs to another election."]})
        return attrs


class RecomputeAcceptedSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    election_id = serializers.IntegerField()
    constituency_id = serializers.IntegerField(allow_null=True)


class RecomputeView(GenericAPIView):
    """Queue a recompute of an election, or of one constituency (staff only)."""

    permission_classes = [IsStaff]
    serializer_class = RecomputeRequestSerializer

    @extend_schema(responses={202: RecomputeAcceptedSerializer})
    def post(self, request):
        from metrics.tasks import recompute_election

        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        constituency = serializer.validated_data.get("constituency")
        election_id = constituency.election_id if constituency else serializer.validated_data["election"].id
        constituency_id = constituency.id if constituency else None
        try:
            result = recompute_election.delay(election_id, constituency_id)
        except Exception:
            logger.exception("could not queue a recompute of election %s", election_id)
            return Response(
                {"detail": "The task queue is unavailable; try again shortly."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        body = {"task_id": result.id, "election_id": election_id, "constituency_id": constituency_id}
        return Response(RecomputeAcceptedSerializer(body).data, status=status.HTTP_202_ACCEPTED)
