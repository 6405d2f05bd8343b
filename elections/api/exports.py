"""CSV exports of the elections API and of the APIs above it: the timezone of a row's times.

The renderer (election_monitor.csv_export) writes each time column again in local time; the
zone is the row's election's, found from what the row carries: its own ``timezone`` (an
election), an election id, or a constituency id.
"""

from datetime import tzinfo

from django.db.models import QuerySet

from election_monitor.csv_export import STREAM_CHUNK_ROWS, CSVExportMixin
from elections.models import Constituency, Election
from elections.timebuckets import zone

_ELECTION_KEYS = ("election_id", "election")


class ElectionZones:
    """Row → its election's timezone; elections' zones are loaded once per response."""

    def __init__(self):
        self._elections: dict[int, tzinfo] | None = None
        self._constituencies: dict[int, tzinfo | None] = {}

    def __call__(self, row: dict) -> tzinfo | None:
        name = row.get("timezone")
        if isinstance(name, str) and name:
            return zone(name)
        for key, value in row.items():
            if isinstance(value, int) and (key in _ELECTION_KEYS or key.endswith(".election_id")):
                return self._election(value)
        constituency_id = row.get("constituency_id")
        if isinstance(constituency_id, int):
            return self._constituency(constituency_id)
        return None

    def _election(self, election_id: int) -> tzinfo | None:
        if self._elections is None:
            self._elections = {pk: zone(name) for pk, name in Election.objects.values_list("id", "timezone")}
        return self._elections.get(election_id)

    def _constituency(self, constituency_id: int) -> tzinfo | None:
        if constituency_id not in self._constituencies:
            name = Constituency.objects.filter(pk=constituency_id).values_list("election__timezone", flat=True).first()
            self._constituencies[constituency_id] = zone(name) if name else None
        return self._constituencies[constituency_id]


class ElectionCSVExportMixin(CSVExportMixin):
    """CSV exports whose local-time columns are in each row's election's timezone; a list
    exports every matching row, streamed."""

    def csv_zone(self, row: dict) -> tzinfo | None:
        zones = self.__dict__.setdefault("_csv_zones", ElectionZones())
        return zones(row)

    def list(self, request, *args, **kwargs):
        if not self.wants_csv():
            return super().list(request, *args, **kwargs)
        rows = self.filter_queryset(self.get_queryset())
        if isinstance(rows, QuerySet):
            ordering = getattr(self, "csv_ordering", None)  # the JSON's order, where its paginator sets one
            rows = (rows.order_by(*ordering) if ordering else rows).iterator(chunk_size=STREAM_CHUNK_ROWS)
        return self.csv_stream(rows, self.get_serializer_class(), filename=self.csv_filename())
