"""What episode upkeep adds to a flush, measured A/B in one process (docs/PERFORMANCE.md).

Alternates flushes with the upkeep on and off (``metrics_recompute``'s call of
``episodes_refresh`` replaced by a no-op) on an election that ``bench/run.py`` generated, each
after N new transactions in the election's last hour, so both arms see the same machine and
the same state. Leaves the election with the transactions it added (run item 1 again for a
fresh one). The scores of the "off" flushes are not kept current: measure, do not trust.

    .venv/bin/python bench/episode_upkeep.py --election bench-2000c-1000000tx --per-flush 1 --rounds 60
"""

import argparse
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import env

env.prepare()

import django  # noqa: E402

django.setup()

from elections import services  # noqa: E402
from elections.models import Constituency, Election  # noqa: E402
from metrics import aggregation, episodes, tasks  # noqa: E402
from metrics.pipeline import dirty_buckets_flush_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--election", required=True, help="code of a generated election")
    parser.add_argument("--per-flush", type=int, default=1, help="new transactions before each flush")
    parser.add_argument("--rounds", type=int, default=40, help="flushes, alternating on and off")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    election = Election.objects.get(code=args.election)
    ids = list(Constituency.objects.filter(election_id=election.id).values_list("id", flat=True))
    rng = random.Random(args.seed)
    spent: list[float] = []

    def timed_refresh(**kwargs):
        started = time.perf_counter()
        found = episodes.episodes_refresh(**kwargs)
        spent.append(time.perf_counter() - started)
        return found

    arms: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(args.rounds):
        arm = "on" if i % 2 == 0 else "off"
        rows = [
            services.TransactionRow(
                f"upkeep{time.time_ns():x}{n:05d}",
                election.id,
                rng.choice(ids),
                rng.choice(["bulletin_issued", "vote_cast"]),
                election.ends_at - timedelta(seconds=rng.randrange(60, 3600)),
                None,
            )
            for n in range(args.per_flush)
        ]
        with mock.patch.object(tasks, "flush_request", return_value=None):
            services.transactions_ingest(rows=rows)
        refresh = timed_refresh if arm == "on" else (lambda **kwargs: [])
        with mock.patch.object(aggregation, "episodes_refresh", refresh):
            started = time.perf_counter()
            dirty_buckets_flush_all(election_id=election.id)
            arms[arm].append(time.perf_counter() - started)
    on, off = statistics.median(arms["on"]), statistics.median(arms["off"])
    print(
        f"{args.per_flush} transaction(s) per flush, {args.rounds} flushes: "
        f"with upkeep {on * 1000:.1f} ms, without {off * 1000:.1f} ms (median), ratio {on / off:.2f}; "
        f"inside episodes_refresh: median {statistics.median(spent) * 1000:.1f} ms, "
        f"max {max(spent) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
