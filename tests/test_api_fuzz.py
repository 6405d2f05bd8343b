"""Property-based fuzzing of the read API from its own OpenAPI schema (schemathesis).

Every GET operation of the metrics read API gets generated requests — random ids and
parameters, and requests pinned to a real election and constituency so the fuzz reaches real
data — sent in-process to the Django WSGI app. A run fails on any 5xx, an undocumented
status code or content type, or a body that does not match the documented schema. Bounded:
a few examples per operation, the whole run in seconds.
"""

from datetime import timedelta

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from election_monitor.throttling import FailOpenAnonRateThrottle
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db

READ_PATHS = r"^/api/(hourly-stats|metrics|anomalies)/"
EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def wsgi_app():
    """The real WSGI application, in this thread, on the test transaction's connection.

    Like Django's test client, keep request signals from closing that connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def seeded():
    return seeded_election(tz="Asia/Kolkata", constituencies=5, hours=30)


@pytest.fixture
def auth_header(db):
    # Authenticated, so that the anonymous throttle does not turn the run into 429s.
    token = Token.objects.create(user=User.objects.create_user("fuzz", password="unused-password-9"))
    return {"Authorization": f"Token {token.key}"}


def operation_strategy(operation, seeded):
    """Free generation, plus generation pinned to real objects."""
    strategies = [operation.as_strategy()]
    path = operation.path
    if "{election_id}" in path:
        strategies.append(operation.as_strategy(path_parameters={"election_id": seeded.election.id}))
    if "{constituency_id}" in path:
        for member in seeded.constituencies[:2]:
            strategies.append(operation.as_strategy(path_parameters={"constituency_id": member.id}))
    if path in ("/api/anomalies/", "/api/anomalies/episodes/"):
        strategies.append(operation.as_strategy(query={"election": seeded.election.id}))
    return st.one_of(strategies)


def test_read_api_conforms_to_its_schema_under_fuzzing(wsgi_app, seeded, auth_header):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    schema = schema.include(method="GET", path_regex=READ_PATHS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10, [op.label for op in operations]

    statuses: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation_strategy(operation, seeded))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call(headers=auth_header)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=auth_header)

        fuzz()

    # Guards the run itself: it must have reached real data, not only 404s and 400s.
    assert all(200 in codes for codes in statuses.values()), statuses


def test_read_api_never_answers_5xx_to_invalid_requests(wsgi_app, seeded, auth_header):
    """Negative generation: parameters that break the schema (wrong types, out-of-range
    values, unknown enums) must be refused, never crash the server."""
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    # The dashboards take no parameters: there is nothing to make invalid.
    schema = schema.include(method="GET", path_regex=READ_PATHS).exclude(path_regex="dashboard")
    refused = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            nonlocal refused
            response = case.call(headers=auth_header)
            refused += 400 <= response.status_code < 500
            case.validate_response(response, checks=[not_a_server_error], headers=auth_header)

        fuzz()
    assert refused > 0


# --- every endpoint, reads and writes, with an ingest token and anonymously -------------------

ALL_OPERATIONS = 27  # with certify/uncertify, GET anomalies/episodes/ and the five forensics reads


@pytest.fixture
def ingest_header(db):
    user = User.objects.create_user("fuzz-ingest", password="unused-password-8")
    user.user_permissions.add(Permission.objects.get(codename="ingest_data"))
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def unthrottled(monkeypatch):
    """The anonymous run is about conformance, not the rate (tests/test_throttling.py)."""
    monkeypatch.setattr(FailOpenAnonRateThrottle, "THROTTLE_RATES", {"anon": "1000000/minute"})


# Nothing in these to make invalid: negative generation cannot build a case.
NO_INPUT = {"GET /api/", "GET /api/metrics/dashboard/summary/", "GET /api/metrics/dashboard/detailed/"}


def valid_write(operation, seeded):
    """Free generation rarely builds a body the API takes (an IANA zone, dates in range, an
    existing constituency); half of these cases keep the generated extras but fix those."""
    member = seeded.constituencies[0]
    fixes = {
        "POST /api/elections/": lambda body: {
            **body, "timezone": "Europe/Moscow", "starts_at": "2024-03-15T08:00:00+03:00",
            "ends_at": "2024-03-17T20:00:00+03:00",
        },
        "POST /api/constituencies/": lambda body: {
            **body, "election": seeded.election.id, "registered_voters": 1000,
        },
        "POST /api/transactions/": lambda body: {
            "tx_hash": _usable_hash(body), "constituency": member.id, "kind": "vote_cast",
            "timestamp": (seeded.election.starts_at + timedelta(minutes=5)).isoformat(),
        },
    }  # fmt: skip
    fix = fixes.get(operation.label)
    if fix is None:
        return None

    def fixed(case):
        if isinstance(case.body, dict) or operation.label == "POST /api/transactions/":
            case.body = fix(case.body)
        return case

    return operation.as_strategy().map(fixed)


def _usable_hash(body) -> str:
    tx_hash = body.get("tx_hash") if isinstance(body, dict) else None
    if isinstance(tx_hash, str) and tx_hash.strip() and "\x00" not in tx_hash:
        return tx_hash
    return "fuzz"


def fuzz_operations(wsgi_app, seeded, headers: dict, *, mode=GenerationMode.POSITIVE, checks=CHECKS) -> dict:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == ALL_OPERATIONS, [op.label for op in operations]
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        if mode == GenerationMode.POSITIVE:
            strategy = operation_strategy(operation, seeded)
            if (writes := valid_write(operation, seeded)) is not None:
                strategy = st.one_of(strategy, writes)
        elif operation.label in NO_INPUT:
            continue
        else:
            strategy = operation.as_strategy(mode)

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call(headers=headers)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=checks, headers=headers)

        fuzz()
    return statuses


def test_every_operation_conforms_with_an_ingest_token(wsgi_app, seeded, ingest_header):
    statuses = fuzz_operations(wsgi_app, seeded, ingest_header)
    assert not any(code >= 500 for codes in statuses.values() for code in codes)
    # The run reached real data and stored things: reads answered 200, writes 201 somewhere.
    assert 200 in statuses["GET /api/metrics/election/{election_id}/"]
    for label in ("POST /api/elections/", "POST /api/constituencies/", "POST /api/transactions/"):
        assert statuses[label] & {200, 201}, (label, statuses[label])
    assert statuses["POST /api/metrics/recompute/"] <= {400, 403}  # not staff


def test_every_operation_conforms_anonymously(wsgi_app, seeded, unthrottled):
    statuses = fuzz_operations(wsgi_app, seeded, {})
    for label, codes in statuses.items():
        if label.startswith("POST"):
            assert codes <= {400, 401, 403}, (label, codes)  # never stored anything
    assert 200 in statuses["GET /api/metrics/dashboard/summary/"]


def test_no_operation_answers_5xx_to_invalid_requests(wsgi_app, seeded, ingest_header):
    """Negative generation over every operation, writes included: bodies and parameters
    that break the schema are refused, never a crash."""
    statuses = fuzz_operations(
        wsgi_app, seeded, ingest_header, mode=GenerationMode.NEGATIVE, checks=[not_a_server_error]
    )
    assert any(400 <= code < 500 for codes in statuses.values() for code in codes)
