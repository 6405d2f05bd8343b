"""A table of named hostile inputs, each sent over HTTP through DRF's test client: the
expected status, a fragment of the message the client gets, and that nothing was stored
(the row count of every model is unchanged). The fuzz runs in tests/test_api_fuzz.py cover
what nobody thought of; this table pins what someone did."""

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.apps import apps

from elections.tests.factories import ConstituencyFactory, ElectionFactory, TransactionFactory

pytestmark = pytest.mark.django_db

# Placeholders in a table row, replaced by the ids of the fixture's objects.
C, E, OTHER_C, STORED_CODE = "<constituency>", "<election>", "<other-constituency>", "<stored-code>"


@dataclass
class Bad:
    name: str
    method: str
    path: str
    status: int
    message: str
    body: object = None  # a Python value sent as JSON, or bytes sent as they are
    content_type: str = "application/json"
    client: str = "ingest"  # ingest, staff, reader, anonymous
    query: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def tx(**fields) -> dict:
    item = {"tx_hash": "0xhostile", "constituency": C, "kind": "vote_cast", "timestamp": "2024-09-06T06:00:00Z"}
    item.update(fields)
    return {k: v for k, v in item.items() if v is not ...}


def election(**fields) -> dict:
    body = {
        "code": "hostile",
        "name": "Hostile",
        "timezone": "Europe/Moscow",
        "starts_at": "2024-03-15T08:00:00+03:00",
        "ends_at": "2024-03-17T20:00:00+03:00",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def constituency(**fields) -> dict:
    body = {"election": E, "code": "new-c", "name": "New", "registered_voters": 1000}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


TX = "/api/transactions/"
ELECTIONS = "/api/elections/"
CONSTITUENCIES = "/api/constituencies/"
RECOMPUTE = "/api/metrics/recompute/"
TIME_PERIOD = f"/api/metrics/constituency/{C}/time-period/"
HOURLY = f"/api/hourly-stats/election/{E}/"

TABLE = [
    # --- one transaction: each field ------------------------------------------------------------
    Bad("tx-hash-missing", "POST", TX, 400, "A non-empty string is required.", tx(tx_hash=...)),
    Bad("tx-hash-empty", "POST", TX, 400, "A non-empty string is required.", tx(tx_hash="")),
    Bad("tx-hash-blank", "POST", TX, 400, "A non-empty string is required.", tx(tx_hash="   ")),
    Bad("tx-hash-129-chars", "POST", TX, 400, "At most 128 characters.", tx(tx_hash="a" * 129)),
    Bad("tx-hash-nul", "POST", TX, 400, "Must not contain NUL characters.", tx(tx_hash="0x\x00ab")),
    Bad("tx-hash-number", "POST", TX, 400, "A non-empty string is required.", tx(tx_hash=123)),
    Bad("tx-hash-list", "POST", TX, 400, "A non-empty string is required.", tx(tx_hash=["0xa"])),
    Bad("constituency-missing", "POST", TX, 400, "This field is required.", tx(constituency=...)),
    Bad("constituency-unknown", "POST", TX, 400, "Unknown constituency '999999'.", tx(constituency=999999)),
    Bad("constituency-text", "POST", TX, 400, "Unknown constituency 'abc'.", tx(constituency="abc")),
    Bad("constituency-negative", "POST", TX, 400, "Unknown constituency '-1'.", tx(constituency=-1)),
    Bad("constituency-beyond-bigint", "POST", TX, 400, "Unknown constituency", tx(constituency=2**70)),
    Bad("constituency-bool", "POST", TX, 400, "Unknown constituency 'True'.", tx(constituency=True)),
    Bad("election-mismatch", "POST", TX, 400, "belongs to another election", tx(constituency=OTHER_C, election=E)),
    Bad("kind-missing", "POST", TX, 400, "'None' is not one of", tx(kind=...)),
    Bad("kind-wrong-case", "POST", TX, 400, "'VOTE_CAST' is not one of", tx(kind="VOTE_CAST")),
    Bad("kind-number", "POST", TX, 400, "'1' is not one of", tx(kind=1)),
    Bad("timestamp-naive", "POST", TX, 400, "has no UTC offset", tx(timestamp="2024-09-06T06:00:00")),
    Bad("timestamp-garbage", "POST", TX, 400, "is not an ISO 8601 datetime", tx(timestamp="yesterday")),
    Bad("timestamp-missing", "POST", TX, 400, "An ISO 8601 datetime with a UTC offset is required.", tx(timestamp=...)),
    Bad("timestamp-year-1", "POST", TX, 400, "is out of range", tx(timestamp="0001-01-01T00:00:00+01:00")),
    Bad("timestamp-month-13", "POST", TX, 400, "is not an ISO 8601 datetime", tx(timestamp="2024-13-01T00:00:00Z")),
    Bad("timestamp-after-window", "POST", TX, 400, "30 days outside", tx(timestamp="2024-10-09T20:00:01Z")),
    Bad("timestamp-before-window", "POST", TX, 400, "30 days outside", tx(timestamp="2024-08-01T00:00:00Z")),
    Bad("block-number-negative", "POST", TX, 400, "non-negative 64-bit", tx(block_number=-1)),
    Bad("block-number-2-63", "POST", TX, 400, "non-negative 64-bit", tx(block_number=2**63)),
    Bad("block-number-fraction", "POST", TX, 400, "non-negative integer", tx(block_number=1.5)),
    Bad("block-number-text", "POST", TX, 400, "non-negative integer", tx(block_number="x")),
    Bad("block-number-bool", "POST", TX, 400, "non-negative integer", tx(block_number=True)),
    # --- the shape of the body --------------------------------------------------------------------
    Bad("body-string", "POST", TX, 400, "Expected a JSON object or a list of them.", "hello"),
    Bad("body-number", "POST", TX, 400, "Expected a JSON object or a list of them.", 42),
    Bad("body-null", "POST", TX, 400, "Expected a JSON object or a list of them.", b"null"),
    Bad("list-empty", "POST", TX, 400, "Send at least one transaction.", []),
    Bad("list-10001", "POST", TX, 400, "At most 10000 transactions per request; got 10001.", [{}] * 10_001),
    Bad("list-one-bad-item", "POST", TX, 400, "Item 1 is invalid (kind:", [tx(), tx(tx_hash="0x2", kind="x")]),
    Bad("list-non-object-item", "POST", TX, 400, "Item 0 is invalid (non_field_errors: Expected a JSON object.)", [5]),
    Bad("list-of-lists", "POST", TX, 400, "Expected a JSON object.", [[tx()]]),
    # --- pathological JSON ------------------------------------------------------------------------
    Bad("json-deep-arrays", "POST", TX, 400, "nested deeper than 32 levels", b"[" * 100_000),
    Bad("json-deep-objects", "POST", TX, 400, "nested deeper than 32 levels", b'{"a":' * 50 + b"1" + b"}" * 50),
    Bad("json-nan", "POST", TX, 400, "NaN is not valid JSON", b'{"block_number": NaN}'),
    Bad("json-infinity", "POST", TX, 400, "Infinity is not valid JSON", b'{"block_number": Infinity}'),
    Bad("json-float-overflow", "POST", TX, 400, "is out of range", b'{"block_number": 1e999}'),
    Bad("json-5000-digit-integer", "POST", TX, 400, "4300 digits", b'{"block_number": ' + b"7" * 5000 + b"}"),
    Bad("json-lone-surrogate", "POST", TX, 400, "lone surrogate", b'{"tx_hash": "\\ud800"}'),
    Bad("json-duplicate-key", "POST", TX, 400, "appears twice", b'{"tx_hash": "a", "tx_hash": "b"}'),
    Bad("json-not-utf8", "POST", TX, 400, "not valid utf-8", b'{"tx_hash": "\xff\xfe"}'),
    Bad("json-truncated", "POST", TX, 400, "JSON parse error", b'{"tx_hash": '),
    Bad("json-single-quotes", "POST", TX, 400, "JSON parse error", b"{'tx_hash': 'a'}"),
    Bad("json-trailing-garbage", "POST", TX, 400, "Extra data", b"{} {}"),
    Bad(
        "body-too-large",
        "POST",
        TX,
        413,
        "larger than the limit of 1000 bytes",
        [tx(tx_hash=f"0x{i}") for i in range(50)],
        settings={"DATA_UPLOAD_MAX_MEMORY_SIZE": 1000},
    ),  # fmt: skip
    Bad("content-type-text", "POST", TX, 415, "Unsupported media type", b"{}", content_type="text/plain"),
    Bad("content-type-xml", "POST", TX, 415, "Unsupported media type", b"<tx/>", content_type="application/xml"),
    Bad(
        "charset-bz2", "POST", TX, 400, "Unsupported charset", b"{}", content_type="application/json; charset=bz2_codec"
    ),
    # --- credentials --------------------------------------------------------------------------------
    Bad("anonymous-write", "POST", TX, 401, "Authentication credentials were not provided.", tx(), client="anonymous"),
    Bad("reader-write", "POST", TX, 403, "You do not have permission", tx(), client="reader"),
    Bad(
        "anonymous-election-write", "POST", ELECTIONS, 401, "Authentication credentials", election(), client="anonymous"
    ),
    Bad("non-staff-recompute", "POST", RECOMPUTE, 403, "You do not have permission", {"election": E}),
    # --- elections ------------------------------------------------------------------------------------
    Bad("election-ends-9999", "POST", ELECTIONS, 400, "1970-2999", election(ends_at="9999-12-31T23:00:00Z")),
    Bad("election-starts-1969", "POST", ELECTIONS, 400, "1970-2999", election(starts_at="1969-12-31T00:00:00Z")),
    Bad(
        "election-ends-before-start",
        "POST",
        ELECTIONS,
        400,
        "must end after it starts",
        election(ends_at="2024-03-14T00:00:00Z"),
    ),  # fmt: skip
    Bad("election-naive-start", "POST", ELECTIONS, 400, "no UTC offset", election(starts_at="2024-03-15T08:00:00")),
    Bad(
        "election-timezone-unknown",
        "POST",
        ELECTIONS,
        400,
        "is not an IANA timezone name",
        election(timezone="Mars/Olympus"),
    ),  # fmt: skip
    Bad("election-code-missing", "POST", ELECTIONS, 400, "This field is required.", election(code=...)),
    Bad("election-code-not-slug", "POST", ELECTIONS, 400, "slug", election(code="a b")),
    Bad("election-code-taken", "POST", ELECTIONS, 400, "already exists", election(code="test-election")),
    Bad("election-name-256", "POST", ELECTIONS, 400, "no more than 255 characters", election(name="n" * 256)),
    Bad("election-name-nul", "POST", ELECTIONS, 400, "Null characters are not allowed.", election(name="a\x00b")),
    Bad("election-body-list", "POST", ELECTIONS, 400, "Invalid data", [election()]),
    # --- constituencies -----------------------------------------------------------------------------
    Bad("voters-zero", "POST", CONSTITUENCIES, 400, "greater than or equal to 1", constituency(registered_voters=0)),
    Bad(
        "voters-negative", "POST", CONSTITUENCIES, 400, "greater than or equal to 1", constituency(registered_voters=-5)
    ),  # fmt: skip
    Bad(
        "voters-2-31",
        "POST",
        CONSTITUENCIES,
        400,
        "less than or equal to 2147483647",
        constituency(registered_voters=2**31),
    ),  # fmt: skip
    Bad(
        "voters-text",
        "POST",
        CONSTITUENCIES,
        400,
        "A valid integer is required.",
        constituency(registered_voters="many"),
    ),  # fmt: skip
    Bad(
        "constituency-election-unknown",
        "POST",
        CONSTITUENCIES,
        400,
        "object does not exist",
        constituency(election=999999),
    ),  # fmt: skip
    Bad(
        "constituency-code-taken", "POST", CONSTITUENCIES, 400, "must make a unique set", constituency(code=STORED_CODE)
    ),  # fmt: skip
    Bad("constituency-name-missing", "POST", CONSTITUENCIES, 400, "This field is required.", constituency(name=...)),
    # --- recompute ----------------------------------------------------------------------------------
    Bad("recompute-nothing", "POST", RECOMPUTE, 400, "Give an election or a constituency.", {}, client="staff"),
    Bad(
        "recompute-unknown-election",
        "POST",
        RECOMPUTE,
        400,
        "No election with id 999999.",
        {"election": 999999},
        client="staff",
    ),  # fmt: skip
    Bad(
        "recompute-mismatch",
        "POST",
        RECOMPUTE,
        400,
        "belongs to another election",
        {"election": E, "constituency": OTHER_C},
        client="staff",
    ),  # fmt: skip
    # --- reads ---------------------------------------------------------------------------------------
    Bad("period-unknown", "GET", TIME_PERIOD, 400, "is not a valid period", query={"period": "fortnight"}),
    Bad(
        "start-time-naive",
        "GET",
        TIME_PERIOD,
        400,
        "no UTC offset",
        query={"period": "day", "start_time": "2024-09-06T00:00:00"},
    ),  # fmt: skip
    Bad(
        "start-after-end",
        "GET",
        HOURLY,
        400,
        "start_time must not be after end_time",
        query={"start_time": "2024-09-07T00:00:00Z", "end_time": "2024-09-06T00:00:00Z"},
    ),  # fmt: skip
    Bad("start-time-year-10000", "GET", HOURLY, 400, "start_time", query={"start_time": "10000-01-01T00:00:00Z"}),
    Bad("page-size-zero", "GET", HOURLY, 400, "Must be an integer from 1 to 1000.", query={"page_size": "0"}),
    Bad("page-size-1001", "GET", HOURLY, 400, "Must be an integer from 1 to 1000.", query={"page_size": "1001"}),
    Bad("page-beyond", "GET", HOURLY, 404, "Invalid page.", query={"page": "999"}),
    Bad("hourly-election-id-zero", "GET", "/api/hourly-stats/election/0/", 400, "ids are positive integers."),
    Bad("metrics-constituency-id-huge", "GET", f"/api/metrics/constituency/{2**70}/", 404, "No constituency with id"),
    Bad("metrics-election-missing", "GET", "/api/metrics/election/999999/", 404, "No election with id 999999."),
    Bad("anomalies-kind-unknown", "GET", "/api/anomalies/", 400, "is not a valid anomaly kind", query={"kind": "x"}),
    Bad(
        "anomalies-election-unknown",
        "GET",
        "/api/anomalies/",
        400,
        "No election with id 999999.",
        query={"election": "999999"},
    ),  # fmt: skip
    Bad("transactions-cursor-garbage", "GET", TX, 404, "Invalid cursor", query={"cursor": "zzz"}),
    Bad("transactions-filter-text", "GET", TX, 400, "A valid integer is required.", query={"election": "abc"}),
    Bad(
        "constituencies-filter-negative",
        "GET",
        CONSTITUENCIES,
        400,
        "greater than or equal to 1",
        query={"election": "-3"},
    ),  # fmt: skip
]


def test_the_table_is_long_enough_and_names_are_unique():
    names = [row.name for row in TABLE]
    assert len(names) >= 60
    assert len(set(names)) == len(names)


def model_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


@pytest.fixture
def world(election, constituencies, ingest_client, staff_client, reader_client, api_client):
    other = ConstituencyFactory(election=ElectionFactory(code="other-election"))
    TransactionFactory(constituency=constituencies[0], timestamp=election.starts_at + timedelta(minutes=5))
    ids = {C: constituencies[0].id, E: election.id, OTHER_C: other.id, STORED_CODE: constituencies[1].code}
    clients = {"ingest": ingest_client, "staff": staff_client, "reader": reader_client, "anonymous": api_client}
    return ids, clients


def resolve(value, ids: dict):
    if isinstance(value, str):
        if value in ids:
            return ids[value]
        for placeholder, real in ids.items():
            value = value.replace(placeholder, str(real))
        return value
    if isinstance(value, dict):
        return {key: resolve(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, ids) for item in value]
    return value


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_a_hostile_input_is_refused_with_a_message_and_stores_nothing(world, row, settings):
    ids, clients = world
    for name, value in row.settings.items():
        setattr(settings, name, value)
    client = clients[row.client]
    path = resolve(row.path, ids)
    before = model_counts()

    if row.method == "GET":
        response = client.get(path, resolve(row.query, ids))
    else:
        body = row.body if isinstance(row.body, bytes) else json.dumps(resolve(row.body, ids)).encode()
        response = client.generic(row.method, path, body, content_type=row.content_type)

    assert response.status_code == row.status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    text = json.dumps(response.json(), ensure_ascii=False)
    assert row.message in text, text[:500]
    assert model_counts() == before
