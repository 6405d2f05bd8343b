"""A full recompute spread over tasks (metrics/parallel.py) stores exactly what the
single-process recompute stores: every hourly row, anomaly and constituency figure, with the
same timestamps, on generated elections (metrics/tests/test_properties.py's scenarios).

Each example builds the same election twice from the same stale state (a flushed first
batch, then late arrivals left unflushed and a few deletions), recomputes one twin in one
process and the other in parts of 1-4 constituencies, and compares them; the parallel twin
must also equal the reference. Celery runs eagerly here (the embedded default's path), so the
steps run one after another, each in its own committed transaction as on a worker.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elections.models import Constituency, Election
from metrics import parallel
from metrics.aggregation import Scope, metrics_recompute
from metrics.cache import metrics_cache
from metrics.models import HOURLY_COMPUTED_FIELDS, Anomaly, HourlyStats, RecomputeRun, RecomputeStage
from metrics.tests import checks, reference
from metrics.tests.test_properties import PROPERTY_SETTINGS, _transactions, scenarios

CONSTITUENCY_FIELDS = (*checks.CONSTITUENCY, "metrics_updated_at")


def twin_build(s: dict, code: str) -> tuple[Election, reference.RefElection]:
    """The scenario's election in a stale state: first batch flushed, the rest not."""
    election = Election.objects.create(
        code=code, name=code, timezone=s["zone"], starts_at=s["starts_at"], ends_at=s["ends_at"]
    )
    cids = [
        Constituency.objects.create(election=election, code=f"c{i}", name=f"C{i}", registered_voters=voters).id
        for i, voters in enumerate(s["registered"])
    ]
    # A flush counts as already queued, so committing the ingests queues none: the stale state
    # stays as built, and both twins start from the same one.
    metrics_cache.flush_pending_claim(election.id)
    first, late = _transactions(s, cids)
    first = [(f"{code}-{h}", c, kind, ts) for h, c, kind, ts in first]
    late = [(f"{code}-{h}", c, kind, ts) for h, c, kind, ts in late]
    ref = reference.RefElection(
        tz=s["zone"],
        starts_at=s["starts_at"],
        ends_at=s["ends_at"],
        registered=dict(zip(cids, s["registered"], strict=True)),
    )
    checks.ingest(election.id, first)
    checks.flush(election.id, s["now"])
    checks.ingest(election.id, late)
    ref.transactions.extend(first + late)
    stored = reference.stored(ref)
    gone = {stored[i % len(stored)][0] for i in s["deletions"]} if stored else set()
    if gone:
        checks.delete(gone)
        ref.transactions = [tx for tx in ref.transactions if tx[0] not in gone]
    return election, ref


def snapshot(election_id: int) -> dict:
    """Everything a recompute writes, keyed by constituency code, timestamps included."""
    codes = dict(Constituency.objects.filter(election_id=election_id).values_list("id", "code"))
    return {
        "hourly": {
            (codes[c], h): tuple(rest)
            for c, h, *rest in HourlyStats.objects.filter(election_id=election_id).values_list(
                "constituency_id", "hour", *HOURLY_COMPUTED_FIELDS
            )
        },
        "anomalies": {
            (codes[c], h, kind): tuple(rest)
            for c, h, kind, *rest in Anomaly.objects.filter(election_id=election_id).values_list(
                "constituency_id", "hour", "kind", "weight", "details", "detected_at"
            )
        },
        "constituencies": {
            code: tuple(rest)
            for code, *rest in Constituency.objects.filter(election_id=election_id).values_list(
                "code", *CONSTITUENCY_FIELDS
            )
        },
    }


@pytest.mark.django_db(transaction=True)
@PROPERTY_SETTINGS
@given(s=scenarios(), part_size=st.integers(1, 4), later=st.integers(0, 7200))
def test_parallel_recompute_stores_what_the_single_process_recompute_stores(s, part_size, later):
    from datetime import timedelta

    now = s["now"] + timedelta(seconds=later)
    try:
        single, _ = twin_build(s, "single")
        split, ref = twin_build(s, "split")
        metrics_recompute(election_id=single.id, scope=Scope.election(), now=now)
        run = parallel.election_recompute_start(election_id=split.id, part_size=part_size, now=now)

        run.refresh_from_db()
        assert run.finished_at is not None
        parts = run.steps.filter(stage=RecomputeStage.PART)
        assert parts.count() == -(-len(s["registered"]) // part_size)
        assert not run.steps.filter(done_at__isnull=True).exists()
        want, got = snapshot(single.id), snapshot(split.id)
        for part in want:
            assert got[part] == want[part], checks._diff(got[part], want[part])
        checks.assert_matches_reference(split.id, ref, now)
    finally:
        RecomputeRun.objects.all().delete()
        Election.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_step_changes_nothing_and_the_run_finishes_once(election):
    from datetime import timedelta

    constituencies = [
        Constituency.objects.create(election=election, code=f"c{i}", name=f"C{i}", registered_voters=100)
        for i in range(3)
    ]
    checks.ingest(
        election.id,
        [
            (f"tx-{i}-{k}", c.id, "vote_cast", election.starts_at + timedelta(minutes=10 * i + k))
            for i, c in enumerate(constituencies)
            for k in range(3 + i)
        ],
    )
    run = parallel.election_recompute_start(election_id=election.id, part_size=1)
    run.refresh_from_db()
    finished = run.finished_at
    before = snapshot(election.id)

    for step in run.steps.all():
        parallel.step_run(step_id=step.id)  # a redelivery after the step committed
    parallel.stage_next(run_id=run.id, after=RecomputeStage.PART)
    assert parallel.run_finish(run_id=run.id) is False

    run.refresh_from_db()
    assert run.finished_at == finished
    assert snapshot(election.id) == before
    assert run.steps.filter(stage=RecomputeStage.SPIKES).count() == len({h for _, h in before["hourly"]})


@pytest.fixture
def spread(election, constituencies, settings):
    """Six constituencies with votes, and parts of two: a whole-election recompute is split."""
    from elections.services import TransactionRow, transactions_ingest
    from elections.tests.factories import VOTING_STARTS

    settings.METRICS_RECOMPUTE_PART_SIZE = 2
    rows = [
        TransactionRow(f"sp-{i}", election.id, constituencies[i % 6].id, "vote_cast", VOTING_STARTS, None)
        for i in range(18)
    ]
    transactions_ingest(rows=rows)
    HourlyStats.objects.filter(election=election).update(votes_cast=0)  # damage to repair
    return election


@pytest.mark.django_db(transaction=True)
def test_the_recompute_api_spreads_a_big_election_over_tasks_and_repairs_it(staff_client, spread, stats_match):
    response = staff_client.post("/api/metrics/recompute/", {"election": spread.id}, format="json")

    assert response.status_code == 202
    run = RecomputeRun.objects.get(election=spread)
    assert run.finished_at is not None
    assert run.steps.filter(stage=RecomputeStage.PART).count() == 3
    stats_match(spread)


@pytest.mark.django_db(transaction=True)
def test_backfill_parallel_waits_for_the_run_and_refuses_partial_scopes(spread, constituencies, stats_match):
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("backfill_metrics", "--election", spread.code, "--parallel", "--part-size", "4", stdout=out)

    assert "recomputed by 2 parts and 1 hourly spike steps" in out.getvalue()
    stats_match(spread)
    for extra in (["--constituency", constituencies[0].code], ["--chunk", "2"], ["--part-size", "0"]):
        with pytest.raises(CommandError):
            call_command("backfill_metrics", "--election", spread.code, "--parallel", *extra)
    assert RecomputeRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_spike_steps_move_the_anomaly_counts_of_every_flagged_row_in_batches(election, monkeypatch):
    """Two constituencies spike in one hour of a never-computed election, and the spike step
    re-reads their rows one per batch: both counts move, and a single-process recompute
    afterwards finds nothing to change."""
    from datetime import timedelta

    places = [
        Constituency.objects.create(election=election, code=f"c{i}", name=f"C{i}", registered_voters=1000)
        for i in range(8)
    ]
    metrics_cache.flush_pending_claim(election.id)  # no flush: the run starts from nothing stored
    checks.ingest(
        election.id,
        [
            (f"sb-{i}-{k}", place.id, "vote_cast", election.starts_at + timedelta(minutes=k))
            for i, place in enumerate(places)
            for k in range(40 if i < 2 else 3)
        ],
    )
    assert not HourlyStats.objects.filter(election=election).exists()
    monkeypatch.setattr(parallel, "DELETE_BATCH", 1)
    now = election.starts_at + timedelta(days=2)
    run = parallel.election_recompute_start(election_id=election.id, part_size=3, now=now)
    run.refresh_from_db()
    assert run.finished_at is not None

    spikes = Anomaly.objects.filter(election=election, kind="velocity_spike")
    assert {a.constituency_id for a in spikes} == {places[0].id, places[1].id}
    for row in HourlyStats.objects.filter(election=election, constituency_id__in=[places[0].id, places[1].id]):
        assert row.anomaly_count == Anomaly.objects.filter(constituency_id=row.constituency_id, hour=row.hour).count()
    after_parallel = snapshot(election.id)
    metrics_recompute(election_id=election.id, scope=Scope.election(), now=now)
    assert snapshot(election.id) == after_parallel
