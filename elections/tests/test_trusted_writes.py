"""Trusted writes (README) on the write path: canonical tx_hash and conflicts, attribution, scoped
credentials, certification, and the admin audit log. Every refusal stores nothing."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from elections.models import (
    AuditEntry,
    CertificationEvent,
    Constituency,
    Election,
    IngestGrant,
    IngestSource,
    Transaction,
)
from elections.services import tx_hash_canonical
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory, TransactionFactory

TRANSACTIONS = "/api/transactions/"


def item(constituency, n: int, **overrides) -> dict:
    found = {
        "tx_hash": f"0xfeed{n:04x}",
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp": (VOTING_STARTS + timedelta(minutes=n)).isoformat(),
    }
    return {**found, **overrides}


def stored_counts() -> tuple[int, int, int]:
    return Transaction.objects.count(), Constituency.objects.count(), Election.objects.count()


# --- canonical tx_hash and conflicts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("0xABC", "0xabc"),
        (" 0xabc ", "0xabc"),
        ("0XDeadBeef", "0xdeadbeef"),
        ("DEADBEEF", "deadbeef"),
        ("Station-7/Ballot-12", "Station-7/Ballot-12"),  # not hexadecimal: only stripped
        ("\t0xaBc\n", "0xabc"),
    ],
)
def test_tx_hash_canonical_form(raw, canonical):
    assert tx_hash_canonical(raw) == canonical


def test_one_transaction_sent_in_three_spellings_is_stored_once(ingest_client, constituencies):
    spellings = [item(constituencies[0], 1, tx_hash=h) for h in ("0xABC", "0xabc", " 0xabc ")]
    response = ingest_client.post(TRANSACTIONS, spellings, format="json")
    assert response.status_code == 201, response.data
    assert response.data == {"created": 1, "duplicates": 2}
    assert list(Transaction.objects.values_list("tx_hash", flat=True)) == ["0xabc"]


def test_a_conflicting_resend_in_a_list_is_409_naming_it_and_stores_nothing(ingest_client, constituencies):
    first = item(constituencies[0], 1)
    assert ingest_client.post(TRANSACTIONS, first, format="json").status_code == 201
    before = stored_counts()
    batch = [item(constituencies[0], 2), item(constituencies[1], 3), {**first, "constituency": constituencies[1].id}]

    response = ingest_client.post(TRANSACTIONS, batch, format="json")

    assert response.status_code == 409, response.data
    assert response.data["conflicts"] == [{"index": 2, "tx_hash": first["tx_hash"], "fields": ["constituency"]}]
    assert "Item 2" in response.data["detail"]
    assert stored_counts() == before


def test_a_repeat_inside_one_list_with_other_content_is_a_conflict(ingest_client, constituencies):
    batch = [item(constituencies[0], 1), item(constituencies[0], 1, kind="bulletin_issued")]
    response = ingest_client.post(TRANSACTIONS, batch, format="json")
    assert response.status_code == 409
    assert response.data["conflicts"][0]["fields"] == ["kind"]
    assert Transaction.objects.count() == 0


def test_an_exact_resend_is_a_duplicate_not_a_conflict(ingest_client, constituencies):
    first = item(constituencies[0], 1)
    ingest_client.post(TRANSACTIONS, [first], format="json")
    # The same instant in another offset is the same timestamp.
    same = {**first, "timestamp": (VOTING_STARTS + timedelta(minutes=1)).astimezone().isoformat()}
    response = ingest_client.post(TRANSACTIONS, [same], format="json")
    assert response.data == {"created": 0, "duplicates": 1}


# --- attribution ---------------------------------------------------------------------------------


def test_every_transaction_records_its_user_path_and_batch(ingest_client, ingest_user, constituencies, tmp_path):
    ingest_client.post(TRANSACTIONS, [item(constituencies[0], 1), item(constituencies[1], 2)], format="json")
    ingest_client.post(TRANSACTIONS, item(constituencies[0], 3), format="json")
    path = tmp_path / "late.csv"
    path.write_text(
        f"tx_hash,constituency,kind,timestamp\nimp-1,{constituencies[0].code},vote_cast,{VOTING_STARTS.isoformat()}\n"
    )
    call_command("import_transactions", str(path), "--election", constituencies[0].election.code, stdout=None)

    by_hash = {t.tx_hash: t.batch for t in Transaction.objects.select_related("batch")}
    listed, single, imported = by_hash["0xfeed0001"], by_hash["0xfeed0003"], by_hash["imp-1"]
    assert by_hash["0xfeed0002"] == listed  # one request, one batch
    assert (listed.source, listed.user, listed.label) == (IngestSource.API, ingest_user, "POST /api/transactions/")
    assert (listed.created, listed.duplicates, listed.conflicts) == (2, 0, 0)
    assert single != listed
    assert (single.source, single.user, single.created) == (IngestSource.API, ingest_user, 1)
    assert (imported.source, imported.user, imported.label) == (IngestSource.IMPORT, None, "late.csv")


def test_an_admin_add_records_the_admin_as_its_source(admin_client, admin_user, constituencies):
    c = constituencies[0]
    response = admin_client.post(
        reverse("admin:elections_transaction_add"),
        {
            "tx_hash": "0xADD",
            "election": c.election_id,
            "constituency": c.id,
            "kind": "vote_cast",
            "timestamp_0": "2024-09-06",
            "timestamp_1": "06:00:00",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    stored = Transaction.objects.get(tx_hash="0xadd")
    assert (stored.batch.source, stored.batch.user) == (IngestSource.ADMIN, admin_user)
    assert AuditEntry.objects.get(model="elections.Transaction").action == "add"


# --- scoped credentials --------------------------------------------------------------------------


@pytest.fixture
def scoped(ingest_user, constituencies):
    """The ingest user limited to the test election; another election exists beside it."""
    other = ConstituencyFactory(election=ElectionFactory(code="elsewhere"), code="x1")
    IngestGrant.objects.create(user=ingest_user, election=constituencies[0].election)
    return other


def test_a_scoped_credential_writes_inside_its_election(ingest_client, scoped, constituencies):
    response = ingest_client.post(TRANSACTIONS, [item(constituencies[0], 1)], format="json")
    assert response.status_code == 201


def test_a_scoped_credential_is_403_outside_and_stores_nothing(ingest_client, scoped, constituencies):
    before = stored_counts()
    responses = [
        ingest_client.post(TRANSACTIONS, [item(constituencies[0], 1), item(scoped, 2)], format="json"),
        ingest_client.post(TRANSACTIONS, item(scoped, 3), format="json"),
        ingest_client.post(
            "/api/constituencies/",
            {"election": scoped.election_id, "code": "new", "name": "New", "registered_voters": 10},
            format="json",
        ),
        ingest_client.post(
            "/api/elections/",
            {
                "code": "mine",
                "name": "Mine",
                "timezone": "UTC",
                "starts_at": "2024-01-01T00:00:00Z",
                "ends_at": "2024-01-02T00:00:00Z",
            },
            format="json",
        ),
    ]
    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    assert "Item 1" in responses[0].data["detail"]
    assert stored_counts() == before


def test_a_constituency_grant_allows_that_constituency_only(ingest_client, ingest_user, constituencies):
    IngestGrant.objects.create(user=ingest_user, election=constituencies[0].election, constituency=constituencies[1])
    assert ingest_client.post(TRANSACTIONS, [item(constituencies[1], 1)], format="json").status_code == 201
    assert ingest_client.post(TRANSACTIONS, [item(constituencies[2], 2)], format="json").status_code == 403
    assert Transaction.objects.count() == 1


def test_a_grant_must_name_a_constituency_of_its_election(ingest_user, constituencies):
    other = ConstituencyFactory(election=ElectionFactory(code="elsewhere"))
    grant = IngestGrant(user=ingest_user, election=constituencies[0].election, constituency=other)
    with pytest.raises(ValidationError):
        grant.full_clean()


# --- certification -------------------------------------------------------------------------------


@pytest.fixture
def certifier(db) -> User:
    user = User.objects.create_user("certifier", password="unused-password-9", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="certify_election"))
    return user


@pytest.fixture
def certifier_client(certifier):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=certifier).key}")
    return client


def test_only_staff_with_the_permission_certify(ingest_client, staff_client, certifier_client, election):
    url = f"/api/elections/{election.id}/certify/"
    assert ingest_client.post(url).status_code == 403
    assert staff_client.post(url).status_code == 403  # staff without the certify permission
    response = certifier_client.post(url)
    assert response.status_code == 200, response.data
    assert certifier_client.post(url).status_code == 409  # already certified


def test_every_write_to_a_certified_election_is_409_and_stores_nothing(
    ingest_client, certifier_client, constituencies, tmp_path
):
    election = constituencies[0].election
    ingest_client.post(TRANSACTIONS, [item(constituencies[0], 1)], format="json")
    assert certifier_client.post(f"/api/elections/{election.id}/certify/").status_code == 200
    before = stored_counts()

    responses = [
        ingest_client.post(TRANSACTIONS, [item(constituencies[0], 2)], format="json"),
        ingest_client.post(TRANSACTIONS, item(constituencies[1], 3), format="json"),
        ingest_client.post(
            "/api/constituencies/",
            {"election": election.id, "code": "late", "name": "Late", "registered_voters": 10},
            format="json",
        ),
    ]
    assert [r.status_code for r in responses] == [409, 409, 409]
    assert "certified" in responses[0].data["detail"]
    path = tmp_path / "late.csv"
    path.write_text(
        f"tx_hash,constituency,kind,timestamp\nlate-1,{constituencies[0].code},vote_cast,{VOTING_STARTS.isoformat()}\n"
    )
    with pytest.raises(CommandError, match="certified"):
        call_command("import_transactions", str(path), "--election", election.code)
    assert stored_counts() == before


def test_uncertifying_needs_a_reason_and_is_logged(ingest_client, certifier_client, certifier, constituencies):
    election = constituencies[0].election
    certifier_client.post(f"/api/elections/{election.id}/certify/")
    assert certifier_client.post(f"/api/elections/{election.id}/uncertify/", {}, format="json").status_code == 400
    response = certifier_client.post(f"/api/elections/{election.id}/uncertify/", {"reason": "  "}, format="json")
    assert response.status_code == 400
    response = certifier_client.post(
        f"/api/elections/{election.id}/uncertify/", {"reason": "Recount ordered by the court"}, format="json"
    )
    assert response.status_code == 200, response.data
    log = list(
        CertificationEvent.objects.filter(election=election).order_by("id").values_list("action", "user", "reason")
    )
    assert log == [("certify", certifier.id, ""), ("uncertify", certifier.id, "Recount ordered by the court")]
    # Writable again.
    assert ingest_client.post(TRANSACTIONS, [item(constituencies[0], 5)], format="json").status_code == 201


def test_the_admin_cannot_change_or_delete_a_certified_elections_data(admin_client, constituencies, certifier):
    from elections.services import election_certify

    tx = TransactionFactory(constituency=constituencies[0])
    election_certify(election_id=constituencies[0].election_id, user=certifier)
    for url in (
        reverse("admin:elections_constituency_change", args=[constituencies[0].id]),
        reverse("admin:elections_transaction_change", args=[tx.id]),
    ):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert b'name="_save"' not in page.content  # read-only view
    response = admin_client.post(
        reverse("admin:elections_transaction_changelist"),
        {"action": "delete_selected", "_selected_action": [tx.id], "post": "yes"},
        follow=True,
    )
    assert Transaction.objects.filter(pk=tx.pk).exists()
    assert response.status_code in (200, 403)


# --- audit log -----------------------------------------------------------------------------------


def test_admin_edits_and_deletes_are_audited(admin_client, admin_user, constituencies):
    c = constituencies[0]
    response = admin_client.post(
        reverse("admin:elections_constituency_change", args=[c.id]),
        {"code": c.code, "name": c.name, "registered_voters": 1234},
    )
    assert response.status_code == 302, response.content[:2000]
    tx = TransactionFactory(constituency=c)
    admin_client.post(
        reverse("admin:elections_transaction_changelist"),
        {"action": "delete_selected", "_selected_action": [tx.id], "post": "yes"},
    )

    change, delete = AuditEntry.objects.order_by("id")
    assert (change.user, change.action, change.model, change.object_id) == (
        admin_user,
        "change",
        "elections.Constituency",
        c.id,
    )
    assert change.changes == {"registered_voters": [1000, 1234]}
    assert (delete.action, delete.model, delete.object_id) == ("delete", "elections.Transaction", tx.id)
    assert delete.changes["tx_hash"] == [tx.tx_hash, None]
    assert not Transaction.objects.filter(pk=tx.pk).exists()


def test_audit_entries_are_append_only(admin_client, admin_user, constituencies):
    entry = AuditEntry.objects.create(
        user=admin_user, username="admin", action="change", model="m", object_id=1, object_repr="x"
    )
    entry.object_repr = "rewritten"
    with pytest.raises(ValidationError):
        entry.save()
    page = admin_client.get(reverse("admin:elections_auditentry_change", args=[entry.id]))
    assert b'name="_save"' not in page.content
