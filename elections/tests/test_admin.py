"""elections/admin.py (and the large-table helpers in elections/admin_utils.py):
list pages stay a fixed number of queries, filters and searches are index-friendly, and
every write goes through the ingest doors so the metrics follow."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from elections.admin_utils import ConstituencyListFilter, EstimatedCountPaginator
from elections.models import Constituency, Election, Transaction
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import DirtyBucket, HourlyStats

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
TX_LIST = reverse("admin:elections_transaction_changelist")
CONSTITUENCY_LIST = reverse("admin:elections_constituency_changelist")
ELECTION_LIST = reverse("admin:elections_election_changelist")


def transactions(constituencies, n: int, start: int = 0, **fields) -> list[Transaction]:
    return [
        TransactionFactory(
            constituency=constituencies[i % len(constituencies)],
            timestamp=VOTING_STARTS + timedelta(minutes=7 * i),
            block_number=i,
            **fields,
        )
        for i in range(start, start + n)
    ]


def queries_for(client, url: str, data=None) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, data or {})
    assert response.status_code == 200, response.content[:500]
    return len(captured), [q["sql"] for q in captured.captured_queries]


def shown_ids(response) -> list[int]:
    return [obj.pk for obj in response.context["cl"].result_list]


# --- pages render --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["election", "constituency", "transaction"])
def test_changelist_and_add_pages_render(admin_client, constituencies, model):
    transactions(constituencies, 3)

    assert admin_client.get(reverse(f"admin:elections_{model}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:elections_{model}_add")).status_code == 200


def test_change_pages_render(admin_client, constituencies):
    tx = transactions(constituencies, 1)[0]

    for url in (
        reverse("admin:elections_election_change", args=[tx.election_id]),
        reverse("admin:elections_constituency_change", args=[tx.constituency_id]),
        reverse("admin:elections_transaction_change", args=[tx.id]),
    ):
        assert admin_client.get(url).status_code == 200, url


# --- no N+1, no full COUNT -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (TX_LIST, {}),
        (TX_LIST, {"election__id__exact": "ELECTION"}),
        (CONSTITUENCY_LIST, {}),
        (ELECTION_LIST, {}),
    ],
    ids=["transactions", "transactions-of-an-election", "constituencies", "elections"],
)
def test_changelist_query_count_does_not_grow_with_rows(
    admin_client, constituencies, url, params, django_assert_max_num_queries
):
    election = constituencies[0].election
    params = {k: (election.id if v == "ELECTION" else v) for k, v in params.items()}
    transactions(constituencies, 2)
    few, _ = queries_for(admin_client, url, params)

    transactions(constituencies, 80, start=2)
    ConstituencyFactory.create_batch(40, election=election)
    ElectionFactory.create_batch(10)
    with django_assert_max_num_queries(few):
        response = admin_client.get(url, params)

    assert len(response.context["cl"].result_list) > 10


def test_transaction_list_shows_codes_without_a_query_per_row(admin_client, constituencies):
    transactions(constituencies, 30)

    response = admin_client.get(TX_LIST)

    body = response.content.decode()
    assert all(c.code in body for c in constituencies)
    assert "test-election" in body


def test_unfiltered_list_counts_exactly_on_sqlite_and_estimates_on_postgresql(
    admin_client, constituencies, monkeypatch
):
    transactions(constituencies, 30)
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE elections_transaction")

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(TX_LIST)

    counts = [
        q["sql"]
        for q in captured.captured_queries
        if "COUNT(" in q["sql"].upper() and "elections_transaction" in q["sql"]
    ]
    if connection.vendor == "postgresql":
        assert counts == []
        assert any("reltuples" in q["sql"] for q in captured.captured_queries)
    else:
        assert len(counts) == 1
    # ANALYZE of 30 rows is exact, so the estimate shows the true number too.
    assert response.context["cl"].result_count == 30
    assert response.context["cl"].full_result_count is None  # show_full_result_count=False: no second COUNT


def test_filtered_list_below_the_threshold_is_counted_exactly(admin_client, constituencies, monkeypatch):
    transactions(constituencies, 30)
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 6)

    response = admin_client.get(TX_LIST, {"constituency": constituencies[0].id})

    assert response.context["cl"].result_count == 5


def test_big_filtered_list_counts_at_most_the_threshold_then_asks_the_planner(
    admin_client, constituencies, monkeypatch
):
    transactions(constituencies, 30)
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 10)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE elections_transaction")

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(TX_LIST, {"election__id__exact": constituencies[0].election_id})

    counted = response.context["cl"].result_count
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    if connection.vendor == "postgresql":
        assert len(counts) == 1
        assert "LIMIT 10" in counts[0]
        assert any(q["sql"].startswith("EXPLAIN") for q in captured.captured_queries)
        assert 10 <= counted <= 60  # the planner's estimate after ANALYZE of 30 rows
    else:
        assert counted == 30
    assert len(shown_ids(response)) == 30


def test_estimate_is_used_only_above_the_threshold(constituencies):
    transactions(constituencies, 12)

    paginator = EstimatedCountPaginator(Transaction.objects.order_by("-id"), 5)

    assert paginator.count == 12
    assert paginator.num_pages == 3
    assert EstimatedCountPaginator(Transaction.objects.filter(kind="vote_cast"), 5).estimated_count() is None


# --- filters, search, date hierarchy -------------------------------------------------------


def test_constituency_filter_lists_nothing_until_an_election_is_chosen(admin_client, constituencies):
    transactions(constituencies, 6)

    unfiltered = admin_client.get(TX_LIST)
    chosen = admin_client.get(TX_LIST, {"election__id__exact": constituencies[0].election_id})

    assert not any(isinstance(spec, ConstituencyListFilter) for spec in unfiltered.context["cl"].filter_specs)
    spec = next(s for s in chosen.context["cl"].filter_specs if isinstance(s, ConstituencyListFilter))
    assert [int(pk) for pk, _ in spec.lookup_choices] == sorted(c.id for c in constituencies)


def test_constituency_filter_offers_only_the_selected_one_in_a_huge_election(admin_client, constituencies, monkeypatch):
    monkeypatch.setattr(ConstituencyListFilter, "max_options", 3)
    transactions(constituencies, 12)
    chosen = constituencies[4]

    response = admin_client.get(TX_LIST, {"election__id__exact": chosen.election_id, "constituency": chosen.id})

    spec = next(s for s in response.context["cl"].filter_specs if isinstance(s, ConstituencyListFilter))
    assert spec.lookup_choices == [(str(chosen.id), f"{chosen.code} ({chosen.name})")]
    assert {Transaction.objects.get(pk=pk).constituency_id for pk in shown_ids(response)} == {chosen.id}
    assert len(shown_ids(response)) == 2


def test_filters_by_election_constituency_and_kind(admin_client, constituencies):
    transactions(constituencies, 12)
    bulletins = transactions(constituencies, 12, start=12, kind="bulletin_issued")
    elsewhere = transactions([ConstituencyFactory(election=ElectionFactory())], 3, start=40)

    by_election = admin_client.get(TX_LIST, {"election__id__exact": elsewhere[0].election_id})
    by_kind = admin_client.get(
        TX_LIST, {"election__id__exact": constituencies[0].election_id, "kind__exact": "bulletin_issued"}
    )
    by_constituency = admin_client.get(
        TX_LIST, {"constituency": constituencies[2].id, "kind__exact": "bulletin_issued"}
    )

    assert sorted(shown_ids(by_election)) == sorted(t.id for t in elsewhere)
    assert sorted(shown_ids(by_kind)) == sorted(t.id for t in bulletins)
    assert sorted(shown_ids(by_constituency)) == sorted(
        t.id for t in bulletins if t.constituency_id == constituencies[2].id
    )


def test_a_constituency_that_does_not_exist_shows_nothing_rather_than_everything(admin_client, constituencies):
    transactions(constituencies, 3)

    response = admin_client.get(TX_LIST, {"constituency": 987654})

    assert shown_ids(response) == []


def test_a_non_numeric_constituency_is_refused_not_a_500(admin_client, constituencies):
    response = admin_client.get(TX_LIST, {"constituency": "abc"})

    # Django's answer to bad lookup parameters: back to the list with ?e=1.
    assert response.status_code == 302
    assert response.url.endswith("?e=1")


def test_search_finds_a_transaction_by_its_exact_hash(admin_client, constituencies):
    wanted = transactions(constituencies, 10)[6]

    found = admin_client.get(TX_LIST, {"q": wanted.tx_hash})
    partial = admin_client.get(TX_LIST, {"q": wanted.tx_hash[:20]})

    assert shown_ids(found) == [wanted.id]
    assert shown_ids(partial) == []


def test_search_constituencies_and_elections_by_code(admin_client, constituencies):
    response = admin_client.get(CONSTITUENCY_LIST, {"q": constituencies[3].code})
    elections = admin_client.get(ELECTION_LIST, {"q": "test-election"})

    assert shown_ids(response) == [constituencies[3].id]
    assert shown_ids(elections) == [constituencies[0].election_id]


def test_date_hierarchy_drills_down_by_hour(admin_client, constituencies):
    early = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=1))
    TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(days=1))

    response = admin_client.get(
        TX_LIST,
        {"election__id__exact": early.election_id, "hour__year": 2024, "hour__month": 9, "hour__day": 6},
    )

    assert shown_ids(response) == [early.id]


def test_transactions_are_newest_first_and_by_hour_within_an_election(admin_client, constituencies):
    made = transactions(constituencies, 5)
    late_insert = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS - timedelta(hours=3))

    unfiltered = admin_client.get(TX_LIST)
    in_election = admin_client.get(TX_LIST, {"election__id__exact": constituencies[0].election_id})

    assert shown_ids(unfiltered)[0] == late_insert.id
    assert shown_ids(in_election)[-1] == late_insert.id
    assert shown_ids(in_election)[0] == made[-1].id


# --- writes go through the ingest doors ----------------------------------------------------


def _tx_form(constituency, **overrides) -> dict:
    local = (VOTING_STARTS + timedelta(minutes=95)).astimezone(constituency.election.tz)
    data = {
        "tx_hash": "0xadmin",
        "election": constituency.election_id,
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp_0": local.strftime("%Y-%m-%d"),
        "timestamp_1": local.strftime("%H:%M:%S"),
        "block_number": "",
    }
    data.update(overrides)
    return data


def test_adding_a_transaction_derives_its_hour_and_updates_the_metrics(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    # Admin form times are in the current timezone (UTC here).
    data = _tx_form(constituencies[0])
    data["timestamp_0"], data["timestamp_1"] = "2024-09-06", "06:35:00"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:elections_transaction_add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    stored = Transaction.objects.get(tx_hash="0xadmin")
    assert stored.hour == VOTING_STARTS + H
    assert list(HourlyStats.objects.values_list("constituency_id", "hour", "votes_cast")) == [
        (constituencies[0].id, VOTING_STARTS + H, 1)
    ]


def test_adding_a_transaction_for_a_constituency_of_another_election_is_a_form_error(admin_client, constituencies):
    other = ConstituencyFactory(election=ElectionFactory())

    response = admin_client.post(
        reverse("admin:elections_transaction_add"), _tx_form(other, election=constituencies[0].election_id)
    )

    assert response.status_code == 200
    assert "constituency" in response.context["adminform"].form.errors
    assert not Transaction.objects.exists()
    assert not DirtyBucket.objects.exists()


def test_changing_a_timestamp_moves_the_transaction_and_marks_both_buckets(admin_client, constituencies):
    tx = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=5))
    DirtyBucket.objects.all().delete()
    data = _tx_form(constituencies[0], tx_hash=tx.tx_hash)
    data.pop("election")  # read-only once stored
    data["timestamp_0"], data["timestamp_1"] = "2024-09-06", "09:10:00"

    response = admin_client.post(reverse("admin:elections_transaction_change", args=[tx.id]), data)

    assert response.status_code == 302
    tx.refresh_from_db()
    assert tx.hour == VOTING_STARTS + 4 * H
    assert set(DirtyBucket.objects.values_list("constituency_id", "hour")) == {
        (constituencies[0].id, VOTING_STARTS),
        (constituencies[0].id, VOTING_STARTS + 4 * H),
    }


def test_hour_and_election_are_read_only_on_a_stored_transaction(admin_client, constituencies):
    tx = transactions(constituencies, 1)[0]

    response = admin_client.get(reverse("admin:elections_transaction_change", args=[tx.id]))

    form = response.context["adminform"].form
    assert "hour" not in form.fields
    assert "election" not in form.fields
    assert "hour" in response.context["adminform"].readonly_fields


def test_deleting_selected_transactions_marks_their_buckets_and_updates_the_metrics(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        made = transactions(constituencies[:2], 4)
    assert HourlyStats.objects.count() == 2  # one hour of each constituency
    doomed = [t for t in made if t.constituency_id == constituencies[0].id]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            TX_LIST, {"action": "delete_selected", "_selected_action": [t.id for t in doomed], "post": "yes"}
        )

    assert response.status_code == 302
    assert set(Transaction.objects.values_list("constituency_id", flat=True)) == {constituencies[1].id}
    assert set(HourlyStats.objects.values_list("constituency_id", flat=True)) == {constituencies[1].id}
    constituencies[0].refresh_from_db()
    assert constituencies[0].total_transactions == 0
    assert not DirtyBucket.objects.exists()


def test_deleting_all_of_a_long_list_confirms_with_a_count(admin_client, constituencies, monkeypatch):
    from elections.admin import TransactionAdmin

    monkeypatch.setattr(TransactionAdmin, "list_deletion_limit", 5)
    made = transactions(constituencies, 12)

    confirm = admin_client.post(
        TX_LIST, {"action": "delete_selected", "select_across": "1", "index": "0", "_selected_action": [made[0].id]}
    )

    body = confirm.content.decode()
    assert confirm.status_code == 200
    assert "12 transactions" in body
    assert made[3].tx_hash not in body
    assert Transaction.objects.count() == 12  # only confirmed, not yet deleted


def test_deleting_one_transaction_goes_through_the_ingest_service(admin_client, constituencies):
    tx = transactions(constituencies, 1)[0]
    DirtyBucket.objects.all().delete()

    response = admin_client.post(reverse("admin:elections_transaction_delete", args=[tx.id]), {"post": "yes"})

    assert response.status_code == 302
    assert not Transaction.objects.exists()
    assert list(DirtyBucket.objects.values_list("constituency_id", "hour")) == [(tx.constituency_id, tx.hour)]


# --- elections and constituencies ----------------------------------------------------------


def test_recompute_action_rebuilds_the_selected_elections_and_says_what_it_did(admin_client, constituencies):
    transactions(constituencies, 12)  # not flushed: no on-commit callbacks run in this test
    other = ElectionFactory()
    assert not HourlyStats.objects.exists()

    response = admin_client.post(
        ELECTION_LIST, {"action": "recompute_metrics", "_selected_action": [constituencies[0].election_id]}
    )

    assert response.status_code == 302
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(messages) == 1
    assert "Recomputed the metrics of test-election" in messages[0]
    assert sum(HourlyStats.objects.values_list("transaction_count", flat=True)) == 12
    assert not HourlyStats.objects.filter(election=other).exists()
    constituencies[0].refresh_from_db()
    assert constituencies[0].total_transactions == 2


def test_recompute_action_reports_a_broker_failure_and_changes_nothing(admin_client, constituencies, monkeypatch):
    from metrics import tasks

    transactions(constituencies, 3)

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.recompute_election, "delay", broker_down)  # simulated fault
    response = admin_client.post(
        ELECTION_LIST, {"action": "recompute_metrics", "_selected_action": [constituencies[0].election_id]}
    )

    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert messages[0][0] == "error"
    assert "backfill_metrics --election test-election" in messages[0][1]
    assert Transaction.objects.count() == 3  # nothing lost
    assert DirtyBucket.objects.count() > 0  # and the marks still wait for the sweep


def test_election_page_links_to_its_lists_instead_of_inlining_them(
    admin_client, election, django_assert_max_num_queries
):
    ConstituencyFactory.create_batch(3, election=election)
    url = reverse("admin:elections_election_change", args=[election.id])
    few, _ = queries_for(admin_client, url)
    ConstituencyFactory.create_batch(60, election=election)

    with django_assert_max_num_queries(few):
        response = admin_client.get(url)

    body = response.content.decode()
    assert "Constituencies (63)" in body
    assert f"election__id__exact={election.id}" in body
    assert not response.context["inline_admin_formsets"]


def test_changing_the_timezone_of_an_election_with_transactions_is_a_form_error(admin_client, constituencies):
    transactions(constituencies, 1)
    election = Election.objects.get(pk=constituencies[0].election_id)
    data = {
        "code": election.code,
        "name": election.name,
        "timezone": "Asia/Kolkata",
        "starts_at_0": "2024-09-06",
        "starts_at_1": "05:00:00",
        "ends_at_0": "2024-09-08",
        "ends_at_1": "20:00:00",
    }

    response = admin_client.post(reverse("admin:elections_election_change", args=[election.id]), data)

    assert response.status_code == 200
    assert "timezone" in response.context["adminform"].form.errors
    assert Election.objects.get(pk=election.id).timezone == "Europe/Moscow"


def test_election_status_filter(admin_client):
    from django.utils import timezone

    now = timezone.now()
    running = ElectionFactory(starts_at=now - H, ends_at=now + H)
    ElectionFactory(starts_at=now + 24 * H, ends_at=now + 48 * H)
    ElectionFactory(starts_at=now - 96 * H, ends_at=now - 72 * H)

    response = admin_client.get(ELECTION_LIST, {"status": "active"})

    assert shown_ids(response) == [running.id]


def test_constituency_metric_fields_are_read_only(admin_client, constituencies):
    constituency = constituencies[0]
    url = reverse("admin:elections_constituency_change", args=[constituency.id])
    data = {"code": constituency.code, "name": "Renamed", "registered_voters": 1000, "total_votes_cast": 999}

    response = admin_client.post(url, data)

    assert response.status_code == 302
    constituency.refresh_from_db()
    assert (constituency.name, constituency.total_votes_cast) == ("Renamed", 0)
    form_fields = admin_client.get(url).context["adminform"].form.fields
    assert not {"total_votes_cast", "participation_rate", "anomaly_score", "election"} & set(form_fields)


def test_changing_registered_voters_in_admin_recomputes_the_rates(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    constituency = constituencies[0]
    with django_capture_on_commit_callbacks(execute=True):
        transactions([constituency], 5)
    url = reverse("admin:elections_constituency_change", args=[constituency.id])

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"code": constituency.code, "name": constituency.name, "registered_voters": 50})

    constituency.refresh_from_db()
    assert constituency.participation_rate == pytest.approx(100 * 5 / 50)


def test_deleting_a_constituency_confirms_with_counts_and_recomputes_the_election(
    admin_client, constituencies, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        transactions(constituencies[:2], 40)
    doomed = constituencies[0]
    url = reverse("admin:elections_constituency_delete", args=[doomed.id])

    with CaptureQueriesContext(connection) as captured:
        confirm = admin_client.get(url)
    with django_capture_on_commit_callbacks(execute=True):
        deleted = admin_client.post(url, {"post": "yes"})

    assert confirm.status_code == 200
    assert "20 transactions" in confirm.content.decode()
    assert len(captured) < 20
    assert deleted.status_code == 302
    assert not Constituency.objects.filter(pk=doomed.id).exists()
    assert set(Transaction.objects.values_list("constituency_id", flat=True)) == {constituencies[1].id}
    assert set(HourlyStats.objects.values_list("constituency_id", flat=True)) == {constituencies[1].id}
    assert not DirtyBucket.objects.exists()


def test_deleting_an_election_confirms_with_counts(admin_client, constituencies):
    transactions(constituencies, 30)
    election_id = constituencies[0].election_id
    url = reverse("admin:elections_election_delete", args=[election_id])

    confirm = admin_client.get(url)
    deleted = admin_client.post(url, {"post": "yes"})

    assert "30 transactions" in confirm.content.decode()
    assert "6 constituencies" in confirm.content.decode()
    assert deleted.status_code == 302
    assert not Election.objects.filter(pk=election_id).exists()
    assert not Transaction.objects.exists()
    assert not DirtyBucket.objects.exists()


# --- the date hierarchy without full scans -------------------------------------------------


@pytest.fixture
def spread(constituencies):
    """Transactions on three days of September and one in October (UTC)."""
    stamps = [VOTING_STARTS + timedelta(hours=h) for h in (0, 1, 20, 30, 31, 50)] + [VOTING_STARTS + timedelta(days=30)]
    return [
        TransactionFactory(constituency=constituencies[i % 3], timestamp=ts, kind="vote_cast" if i % 2 else "other")
        for i, ts in enumerate(stamps)
    ]


@pytest.mark.parametrize("kind", ["year", "month", "day"])
@pytest.mark.parametrize("narrow", [{}, {"kind": "other"}, {"hour__month": 9}])
def test_probed_dates_agree_with_djangos_scan(spread, constituencies, kind, narrow):
    from django.db.models import Max, Min

    from elections.admin_utils import ProbedDates

    queryset = Transaction.objects.filter(election=constituencies[0].election, **narrow).order_by("-id")

    probed = ProbedDates(queryset)

    assert probed.datetimes("hour", kind) == list(queryset.datetimes("hour", kind))
    assert probed.aggregate(first=Min("hour"), last=Max("hour")) == queryset.aggregate(
        first=Min("hour"), last=Max("hour")
    )


def test_date_hierarchy_is_offered_once_an_election_is_chosen_without_scanning(admin_client, spread, constituencies):
    election_id = constituencies[0].election_id

    unfiltered = admin_client.get(TX_LIST)
    with CaptureQueriesContext(connection) as captured:
        chosen = admin_client.get(TX_LIST, {"election__id__exact": election_id, "hour__year": 2024, "hour__month": 9})

    assert "hour__day=" not in unfiltered.content.decode()
    body = chosen.content.decode()
    assert all(f"hour__day={day}" in body for day in (6, 7, 8))
    assert "hour__day=9" not in body
    assert not [q for q in captured.captured_queries if "DISTINCT" in q["sql"].upper()]


def test_election_filter_applies_even_when_there_is_a_single_election(admin_client, constituencies):
    transactions(constituencies, 4)
    election_id = constituencies[0].election_id

    unknown = admin_client.get(TX_LIST, {"election__id__exact": 987654})
    with CaptureQueriesContext(connection) as captured:
        chosen = admin_client.get(TX_LIST, {"election__id__exact": election_id})

    assert shown_ids(unknown) == []
    assert len(shown_ids(chosen)) == 4
    # Every query of the list and of the date links is narrowed by the election (its index).
    reads = [q["sql"] for q in captured.captured_queries if 'FROM "elections_transaction"' in q["sql"]]
    assert reads
    assert all('"election_id" = ' in sql for sql in reads)
