"""CSV exports of API responses (SPEC section 13): the same values as the JSON, as rows.

Every list and metrics endpoint answers ``?format=csv`` or ``Accept: text/csv`` through
``CSVRenderer``; lists stream every matching row (pagination does not apply to an export)
through ``csv_streaming_response``, in constant memory when the rows come from a database
iterator. How a response becomes rows:

- a list (or a paginated page): one row per item;
- an object with one list of objects (``hourly_turnout``, ``buckets``, ``hourly_activity``):
  one row per entry, its fields named ``<list>.<field>``, the object's own fields repeated;
- an object with several such lists (``dashboard/detailed``): one row per entry of each, a
  ``section`` column naming the list;
- the object's nested objects become dotted columns (``summary.total_votes_cast``); objects
  and lists inside rows (an anomaly's ``details``) are their JSON text. Nulls are empty cells.

Every time column ``X`` (UTC ISO 8601, as in the JSON) is followed by ``X_local``: the same
instant in its election's timezone, with its offset. Views name the zone of a row through
``CSVExportMixin.csv_zone``; this module knows nothing of elections.
"""

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, tzinfo

from django.http import StreamingHttpResponse
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.settings import api_settings

CSV_MEDIA_TYPE = "text/csv"
LOCAL_SUFFIX = "_local"
# DRF's rendering of an aware datetime: what a time column of the JSON holds.
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")

ZoneOf = Callable[[dict], tzinfo | None]


def _cell(value) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _local(value, zone: tzinfo | None) -> str:
    if not value or zone is None:
        return ""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone).isoformat()


def _flatten(obj: dict) -> dict:
    """The response object's nested objects as dotted keys (``summary.total_votes_cast``);
    objects inside list entries (an anomaly's ``details``) stay whole, one JSON cell."""
    flat = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


def _record_lists(obj: dict) -> list[str]:
    return [
        key for key, value in obj.items() if isinstance(value, list) and all(isinstance(item, dict) for item in value)
    ]


def table_rows(data) -> list[dict]:
    """A JSON response as flat rows (see the module docstring)."""
    if isinstance(data, list):
        return [dict(item) if isinstance(item, dict) else {"value": item} for item in data]
    if not isinstance(data, dict):
        return [{"value": data}]
    if isinstance(data.get("results"), list) and {"count", "next", "previous"} <= data.keys():
        return table_rows(data["results"])
    lists = _record_lists(data)
    if not lists:
        return [_flatten(data)]
    own = _flatten({key: value for key, value in data.items() if key not in lists})
    rows = []
    for name in lists:
        section = {"section": name} if len(lists) > 1 else {}
        entries = data[name] or [{}]
        for entry in entries:
            prefixed = {f"{name}.{key}": value for key, value in entry.items()}
            rows.append({**section, **own, **prefixed})
    return rows


def _columns(rows: list[dict]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _time_columns(rows: list[dict], columns: list[str]) -> set[str]:
    found = set()
    for name in columns:
        values = [row.get(name) for row in rows if row.get(name) not in (None, "")]
        if values and all(isinstance(v, str) and _ISO_DATETIME.match(v) for v in values):
            found.add(name)
    return found


class _Writer:
    """Rows to CSV text, a time column's local twin right after it."""

    def __init__(self, columns: list[str], time_columns: set[str], zone_of: ZoneOf | None):
        self.columns, self.time_columns, self.zone_of = columns, time_columns, zone_of
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\r\n")

    def header(self) -> list[str]:
        out = []
        for name in self.columns:
            out.append(name)
            if name in self.time_columns:
                out.append(name + LOCAL_SUFFIX)
        return out

    def cells(self, row: dict) -> list[str]:
        zone = self.zone_of(row) if self.zone_of and self.time_columns else None
        out = []
        for name in self.columns:
            value = row.get(name)
            out.append(_cell(value))
            if name in self.time_columns:
                out.append(_local(value, zone))
        return out

    def text(self, cells_list: Iterable[list[str]]) -> str:
        for cells in cells_list:
            self.writer.writerow(cells)
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


class CSVRenderer(BaseRenderer):
    """Any JSON response as CSV; ``renderer_context["csv_zone"]`` names a row's timezone."""

    media_type = CSV_MEDIA_TYPE
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        rows = table_rows(data)
        columns = _columns(rows)
        writer = _Writer(columns, _time_columns(rows, columns), (renderer_context or {}).get("csv_zone"))
        return writer.text([writer.header(), *(writer.cells(row) for row in rows)]).encode(self.charset)


def datetime_fields(serializer: serializers.Serializer) -> set[str]:
    """Names of a serializer's datetime fields: the time columns of a streamed export, known
    before the first row."""
    return {name for name, field in serializer.fields.items() if isinstance(field, serializers.DateTimeField)}


STREAM_CHUNK_ROWS = 2000


def csv_streaming_response(
    items: Iterable, serializer: serializers.Serializer, *, zone_of: ZoneOf | None, filename: str
) -> StreamingHttpResponse:
    """Every item, serialized one at a time by ``serializer`` (the JSON's own serializer) and
    written in chunks: memory stays flat whatever the number of rows when ``items`` is a
    database iterator (``QuerySet.iterator()``: a server-side cursor on PostgreSQL)."""
    columns = list(serializer.fields)
    writer = _Writer(columns, datetime_fields(serializer) & set(columns), zone_of)

    def chunks() -> Iterator[str]:
        yield writer.text([writer.header()])
        batch = []
        for item in items:
            batch.append(writer.cells(serializer.to_representation(item)))
            if len(batch) >= STREAM_CHUNK_ROWS:
                yield writer.text(batch)
                batch = []
        if batch:
            yield writer.text(batch)

    response = StreamingHttpResponse(chunks(), content_type=f"{CSV_MEDIA_TYPE}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def renderers_with_csv() -> list:
    """The API's renderers plus CSV, for views that export."""
    return [*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer]


class CSVExportMixin:
    """For DRF views: CSV among the renderers, the row-zone hook, and streamed exports."""

    renderer_classes = renderers_with_csv()

    def csv_zone(self, row: dict) -> tzinfo | None:
        """The timezone of a row's times (its election's); None leaves ``*_local`` empty."""
        return None

    def wants_csv(self) -> bool:
        return getattr(self.request, "accepted_renderer", None) is not None and (
            self.request.accepted_renderer.format == CSVRenderer.format
        )

    def get_renderer_context(self):
        context = super().get_renderer_context()
        context["csv_zone"] = self.csv_zone
        return context

    def csv_filename(self) -> str:
        """The route's name and ids: ``hourly-stats-election-7``."""
        match = self.request.resolver_match
        parts = [match.url_name if match and match.url_name else "export", *(str(v) for v in self.kwargs.values())]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))

    def csv_stream(self, items: Iterable, serializer_class, *, filename: str) -> StreamingHttpResponse:
        return csv_streaming_response(items, serializer_class(), zone_of=self.csv_zone, filename=filename)

    def handle_exception(self, exc):
        """Errors stay JSON when CSV was asked for: a 400's field errors or a 404's detail
        read as they do everywhere else in the API (and as the schema documents them)."""
        if self.wants_csv():
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.wants_csv() and response.status_code == 200 and not response.has_header("Content-Disposition"):
            response["Content-Disposition"] = f'attachment; filename="{self.csv_filename()}.csv"'
        return response


FORMAT_PARAMETER = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "`csv` for a CSV export (as `Accept: text/csv`): the same values as the JSON, "
    "every matching row of a list (no pagination), each time column followed by `<name>_local`, "
    "the time in the election's timezone.",
    "schema": {"type": "string", "enum": ["json", "csv"]},
}


def schema_add_format_parameter(result, generator, request, public):
    """drf-spectacular postprocessing hook: document ``?format=csv`` on every operation whose
    responses include ``text/csv`` (the views with CSVRenderer)."""
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method != "get" or not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {}).values()
            if any(CSV_MEDIA_TYPE in response.get("content", {}) for response in responses):
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == "format" and p.get("in") == "query" for p in parameters):
                    parameters.append(FORMAT_PARAMETER)
    return result
