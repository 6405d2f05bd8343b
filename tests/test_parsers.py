"""election_monitor/parsers.py and the request-size limit: the largest legal list fits,
anything pathological is a JSON 400 (or 413) with a message, and nothing is stored."""

import json
from datetime import timedelta

import pytest

from elections.models import Election, Transaction
from elections.services import BLOCK_NUMBER_MAX

pytestmark = pytest.mark.django_db


def largest_legal_list(election, constituency) -> list[dict]:
    """10,000 items, 128-character hashes, every optional field at its widest."""
    return [
        {
            "tx_hash": f"{i:0128x}",
            "constituency": constituency.id,
            "election": election.id,
            "kind": "bulletin_issued",
            "timestamp": (election.starts_at + timedelta(seconds=i)).isoformat(timespec="microseconds"),
            "block_number": BLOCK_NUMBER_MAX,
        }
        for i in range(10_000)
    ]


@pytest.mark.parametrize("indent", [None, 4], ids=["compact", "indented"])
def test_the_largest_legal_list_fits_the_request_limit(ingest_client, election, constituencies, indent):
    body = json.dumps(largest_legal_list(election, constituencies[0]), indent=indent)
    assert len(body) > 2.5 * 2**20  # beyond Django's default limit, which refused it

    response = ingest_client.post("/api/transactions/", body, content_type="application/json")

    assert response.status_code == 201, response.content[:300]
    assert response.json() == {"created": 10_000, "duplicates": 0}
    assert Transaction.objects.count() == 10_000


def test_an_oversized_body_is_a_json_413(ingest_client, election, constituencies, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    body = json.dumps(largest_legal_list(election, constituencies[0])[:1000])

    response = ingest_client.post("/api/transactions/", body, content_type="application/json")

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "larger than the limit of 100000 bytes" in response.json()["detail"]
    assert not Transaction.objects.exists()


def tx(constituency, **fields) -> dict:
    return {
        "tx_hash": "0xparse",
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp": "2024-09-06T06:00:00Z",
        **fields,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        ("[" * 40 + "]" * 40, "nested deeper than 32 levels"),
        ('{"a":' * 33 + "1" + "}" * 33, "nested deeper than 32 levels"),
        ('{"tx_hash": NaN}', "NaN is not valid JSON"),
        ('{"tx_hash": -Infinity}', "-Infinity is not valid JSON"),
        ('{"block_number": 1e999}', "out of range"),
        ('{"block_number": ' + "9" * 5000 + "}", "JSON parse error"),
        ('{"tx_hash": "\\ud800"}', "lone surrogate"),
        ('["\\udfff"]', "lone surrogate"),
        ('{"\\ud800": 1}', "lone surrogate"),
        ('{"tx_hash": "a", "tx_hash": "b"}', 'the key "tx_hash" appears twice'),
        ("{'tx_hash': 1}", "JSON parse error"),
        ('{"tx_hash": "a",}', "JSON parse error"),
        ("", None),  # an empty body: no data, the view names what is missing
    ],
    ids=[
        "deep-100000",
        "deep-40",
        "deep-objects",
        "nan",
        "infinity",
        "float-overflow",
        "5000-digit-integer",
        "lone-high-surrogate",
        "lone-low-surrogate",
        "surrogate-key",
        "duplicate-key",
        "single-quotes",
        "trailing-comma",
        "empty",
    ],
)
def test_pathological_json_is_a_400_with_a_message(ingest_client, constituencies, body, message):
    response = ingest_client.post("/api/transactions/", body, content_type="application/json")

    assert response.status_code == 400, response.content[:300]
    detail = json.dumps(response.json())
    if message:
        assert message in response.json()["detail"], detail
    assert not Transaction.objects.exists()


def test_a_body_that_is_not_utf8_is_a_400(ingest_client, constituencies):
    body = json.dumps(tx(constituencies[0])).encode().replace(b"0xparse", b"0x\xff\xfe")
    response = ingest_client.post("/api/transactions/", body, content_type="application/json")
    assert response.status_code == 400
    assert "not valid utf-8" in response.json()["detail"]


def test_valid_surrogate_pairs_and_escapes_still_parse(ingest_client, constituencies):
    # "\ud83d\ude00" is one character (an emoji), not a lone surrogate.
    body = json.dumps(tx(constituencies[0], tx_hash="0x\U0001f600"), ensure_ascii=True)
    assert "\\ud83d\\ude00" in body
    response = ingest_client.post("/api/transactions/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Transaction.objects.get().tx_hash == "0x\U0001f600"


def test_pathological_json_on_other_endpoints_is_a_400(ingest_client):
    for url in ("/api/elections/", "/api/constituencies/"):
        response = ingest_client.post(url, "[" * 5000, content_type="application/json")
        assert response.status_code == 400, url
        assert "nested deeper" in response.json()["detail"]
    assert not Election.objects.exists()
