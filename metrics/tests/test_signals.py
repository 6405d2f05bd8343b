"""metrics.signals: every change of the elections service layer (and a saved Transaction's
post_save) marks its buckets in its own transaction and asks for a flush only after commit."""

import time
from datetime import timedelta

from django.core import serializers
from django.db import transaction

from elections.models import Constituency, Election, Transaction, TransactionKind
from elections.services import (
    TransactionRow,
    constituencies_delete,
    constituency_save,
    election_save,
    elections_delete,
    transactions_delete,
    transactions_ingest,
)
from elections.tests.factories import VOTING_STARTS, TransactionFactory
from metrics.cache import election_version_stored
from metrics.models import Anomaly, AnomalyKind, DirtyBucket, HourlyStats, MetricsVersion


def marked(election) -> set:
    return set(DirtyBucket.objects.filter(election_id=election.id).values_list("constituency_id", "hour"))


def test_orm_save_marks_its_bucket_and_flushes_only_after_commit(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tx = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=5))
    assert marked(election) == {(constituencies[0].id, tx.hour)}
    assert not HourlyStats.objects.exists()
    assert len(callbacks) == 1

    callbacks[0]()
    assert marked(election) == set()
    assert HourlyStats.objects.get(constituency=constituencies[0]).votes_cast == 1
    stats_match(election)


def test_moving_a_transaction_marks_the_old_and_the_new_bucket(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    with django_capture_on_commit_callbacks(execute=True):
        tx = TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS)
    old_hour = tx.hour
    tx = Transaction.objects.get(pk=tx.pk)
    tx.timestamp = VOTING_STARTS + timedelta(hours=3)
    tx.constituency = constituencies[1]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tx.save()
    assert marked(election) == {(constituencies[0].id, old_hour), (constituencies[1].id, tx.hour)}
    for callback in callbacks:
        callback()
    assert marked(election) == set()
    assert not HourlyStats.objects.filter(constituency=constituencies[0]).exists()
    stats_match(election)


def test_rolled_back_ingest_leaves_no_marks_and_requests_no_flush(
    election, constituencies, django_capture_on_commit_callbacks
):
    row = TransactionRow(
        "rolled-back", election.id, constituencies[0].id, TransactionKind.VOTE_CAST, VOTING_STARTS, None
    )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                transactions_ingest(rows=[row])
                raise RuntimeError("the request failed later")
        except RuntimeError:
            pass
    assert callbacks == []
    assert marked(election) == set()


def test_bulk_ingest_marks_every_bucket_once_and_requests_one_flush(
    election, constituencies, django_capture_on_commit_callbacks
):
    rows = [
        TransactionRow(f"b-{i}", election.id, constituencies[i % 3].id, TransactionKind.VOTE_CAST,
                       VOTING_STARTS + timedelta(minutes=20 * i), None)
        for i in range(30)
    ]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = transactions_ingest(rows=rows)
    assert marked(election) == result.buckets
    assert DirtyBucket.objects.filter(election_id=election.id).count() == len(result.buckets)
    assert len(callbacks) == 1


def test_a_one_row_ingest_marks_its_bucket_and_requests_a_flush_after_commit(
    election, constituencies, django_capture_on_commit_callbacks
):
    row = TransactionRow("one", election.id, constituencies[0].id, TransactionKind.VOTE_CAST, VOTING_STARTS, None)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        transactions_ingest(rows=[row])
    assert len(callbacks) == 1
    assert len(marked(election)) == 1


def test_deleting_transactions_marks_their_buckets(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    with django_capture_on_commit_callbacks(execute=True):
        tx = TransactionFactory(constituency=constituencies[0])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        transactions_delete(queryset=Transaction.objects.filter(pk=tx.pk))
    assert callbacks
    assert not HourlyStats.objects.exists()
    assert marked(election) == set()
    stats_match(election)


def test_registered_voters_change_recomputes_the_constituencys_rates(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    c = constituencies[0]
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(constituency=c)
    c.refresh_from_db()
    assert c.participation_rate == 0.1
    c.registered_voters = 500
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        constituency_save(constituency=c)
    assert marked(election) == {(c.id, None)}
    for callback in callbacks:
        callback()
    c.refresh_from_db()
    assert c.participation_rate == 0.2
    stats_match(election)


def test_voting_window_change_marks_the_whole_election(election, constituencies, django_capture_on_commit_callbacks):
    election.ends_at += timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        election_save(election=election)
    assert marked(election) == {(None, None)}
    assert len(callbacks) == 1  # the flush request; the recompute retires the cached reads


def test_renaming_is_announced_so_that_reads_follow(election, constituencies):
    constituencies[0].name = "Renamed"
    constituency_save(constituency=constituencies[0])
    assert marked(election) == {(constituencies[0].id, None)}
    version = election_version_stored(election.id)
    election.name = "Renamed"
    election_save(election=election)
    # No count can move: nothing more to recount, only the cached figures retired.
    assert marked(election) == {(constituencies[0].id, None)}
    assert election_version_stored(election.id) == version + 1


def test_an_election_rename_is_read_at_once_without_a_recount(
    election, constituencies, api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(constituency=constituencies[0], timestamp=VOTING_STARTS + timedelta(minutes=5))
    path = f"/api/metrics/election/{election.id}/"
    assert api_client.get(path).json()["name"] == election.name
    recounted_at = HourlyStats.objects.filter(election=election).values_list("timestamp", flat=True)
    before = sorted(recounted_at)
    assert len(before) == 1
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        election.name = "Renamed election"
        election_save(election=election)
    assert api_client.get(path).json()["name"] == "Renamed election"
    assert marked(election) == set()
    assert len(callbacks) == 1  # the version's publication; no flush was requested
    assert sorted(recounted_at) == before


def test_a_bare_model_save_of_an_election_or_constituency_announces_nothing(election, constituencies):
    """Only the service layer announces changes (and only a Transaction's own save)."""
    constituencies[0].name = "Renamed"
    constituencies[0].save()
    election.name = "Renamed"
    election.save()
    assert marked(election) == set()


def test_raw_loaddata_saves_mark_nothing(election, constituencies):
    tx = TransactionFactory.build(constituency=constituencies[0], election=election, hour=VOTING_STARTS)
    data = serializers.serialize("json", [tx])
    for obj in serializers.deserialize("json", data):
        obj.save()
    assert marked(election) == set()


def test_deleting_a_constituency_rejudges_its_peers_spikes(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    hour = VOTING_STARTS + timedelta(hours=2, minutes=10)
    rows = [
        TransactionRow(f"spike-{i}", election.id, constituencies[0].id, TransactionKind.VOTE_CAST, hour, None)
        for i in range(50)
    ]
    rows += [
        TransactionRow(f"quiet-{c.id}", election.id, c.id, TransactionKind.VOTE_CAST, hour, None)
        for c in constituencies[1:5]
    ]
    with django_capture_on_commit_callbacks(execute=True):
        transactions_ingest(rows=rows)
    spiking = constituencies[0]
    spiking.refresh_from_db()
    assert spiking.total_anomalies >= 1
    assert Anomaly.objects.filter(constituency=spiking, kind=AnomalyKind.VELOCITY_SPIKE).count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        constituencies_delete(queryset=Constituency.objects.filter(pk=constituencies[1].pk))  # four peers left

    assert not Anomaly.objects.filter(kind=AnomalyKind.VELOCITY_SPIKE).exists()
    spiking.refresh_from_db()
    assert spiking.total_anomalies == Anomaly.objects.filter(constituency=spiking).count()
    assert marked(election) == set()
    stats_match(election)


def test_deleting_an_election_marks_nothing(election, constituencies, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(constituency=constituencies[0])
    election_id = election.id
    with django_capture_on_commit_callbacks(execute=True):
        elections_delete(queryset=Election.objects.filter(pk=election.pk))
    assert not DirtyBucket.objects.filter(election_id=election_id).exists()


def test_deleting_an_election_drops_it_from_cached_dashboards(
    election, constituencies, api_client, django_capture_on_commit_callbacks, settings
):
    """A deletion recomputes nothing: readers notice it at their next version check."""
    settings.METRICS_VERSION_RECHECK_SECONDS = 0.2
    with django_capture_on_commit_callbacks(execute=True):
        TransactionFactory(constituency=constituencies[0])
    assert api_client.get("/api/metrics/dashboard/summary/").json()["elections"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        elections_delete(queryset=Election.objects.filter(pk=election.pk))
    time.sleep(0.25)
    assert api_client.get("/api/metrics/dashboard/summary/").json()["elections"] == 0


def test_deleting_an_empty_election_drops_it_from_cached_dashboards(
    election, api_client, django_capture_on_commit_callbacks, settings
):
    """A deletion recomputes nothing: readers notice it at their next version check."""
    settings.METRICS_VERSION_RECHECK_SECONDS = 0.2
    assert api_client.get("/api/metrics/dashboard/summary/").json()["elections"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        elections_delete(queryset=Election.objects.filter(pk=election.pk))
    time.sleep(0.25)
    assert api_client.get("/api/metrics/dashboard/summary/").json()["elections"] == 0


def test_deleting_an_election_never_recomputed_drops_its_cached_figures(
    election, constituencies, api_client, django_capture_on_commit_callbacks, settings
):
    """An election without a version (stored before versions existed, or deleted before its
    first flush) must still leave readers within the bound, not at the entry's TTL (a day
    once it is closed): "never recomputed" and "deleted" are different versions."""
    settings.METRICS_VERSION_RECHECK_SECONDS = 0.2
    path = f"/api/metrics/election/{election.id}/"
    assert not MetricsVersion.objects.filter(election=election).exists()
    assert api_client.get(path).status_code == 200
    assert api_client.get(path).status_code == 200  # cached
    with django_capture_on_commit_callbacks(execute=True):
        elections_delete(queryset=Election.objects.filter(pk=election.pk))
    time.sleep(0.25)
    assert api_client.get(path).status_code == 404


def test_renames_show_in_cached_reads_at_once(election, constituencies, api_client, django_capture_on_commit_callbacks):
    c = constituencies[0]
    assert api_client.get(f"/api/metrics/election/{election.id}/").json()["name"] == election.name
    assert api_client.get(f"/api/metrics/constituency/{c.id}/").json()["name"] == c.name
    with django_capture_on_commit_callbacks(execute=True):
        election.name = "Renamed election"
        election_save(election=election)
        c.name = "Renamed constituency"
        constituency_save(constituency=c)
    assert api_client.get(f"/api/metrics/election/{election.id}/").json()["name"] == "Renamed election"
    assert api_client.get(f"/api/metrics/constituency/{c.id}/").json()["name"] == "Renamed constituency"


def test_a_deleted_constituency_answers_404_even_after_a_cached_read(
    election, constituencies, api_client, django_capture_on_commit_callbacks
):
    cid = constituencies[0].id
    assert api_client.get(f"/api/hourly-stats/constituency/{cid}/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        constituencies_delete(queryset=Constituency.objects.filter(pk=cid))
    assert api_client.get(f"/api/hourly-stats/constituency/{cid}/").status_code == 404
    assert api_client.get(f"/api/metrics/constituency/{cid}/").status_code == 404


def test_deleting_one_transaction_through_the_service_updates_the_metrics(
    election, constituencies, django_capture_on_commit_callbacks, stats_match
):
    with django_capture_on_commit_callbacks(execute=True):
        kept = TransactionFactory(constituency=constituencies[0])
        gone = TransactionFactory(constituency=constituencies[0])
    with django_capture_on_commit_callbacks(execute=True):
        transactions_delete(queryset=Transaction.objects.filter(pk=gone.pk))
    constituencies[0].refresh_from_db()
    assert constituencies[0].total_transactions == 1
    assert Transaction.objects.filter(pk=kept.pk).exists()
    stats_match(election)
