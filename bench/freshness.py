"""Item 5: sustained ingest through the bulk API with one Celery worker; for every batch, the
lag from its commit (the 201 answer) to the moment the metrics API first shows it.

A sender posts a list of ``batch`` transactions every ``batch / rate`` seconds on a fixed
schedule (no drift); a poller reads GET /api/metrics/election/{id}/ every ``poll`` seconds.
Batch i is visible once ``total_transactions`` reaches the base total plus everything created
up to and including batch i; its lag is the poll answer's arrival minus batch i's 201 arrival,
so the figure errs on the slow side by at most one poll interval plus one GET.
"""

import http.client
import json
import random
import threading
import time
from datetime import timedelta

from bench.servers import http_get_json, http_post


def freshness_measure(
    *,
    port: int,
    token: str,
    election,
    constituency_ids: list[int],
    rate: float,
    seconds: float,
    batch: int,
    poll: float = 0.05,
    drain_timeout: float = 60.0,
    seed: int = 11,
) -> dict:
    rng = random.Random(seed)
    path = f"/api/metrics/election/{election.id}/"
    base_total = http_get_json(port, path)["total_transactions"]
    batches = int(rate * seconds / batch)
    interval = batch / rate
    # Pre-encoded before the clock starts: timestamps in the election's last hour, the hour a
    # live election is in, spread over all constituencies.
    bodies = []
    for b in range(batches):
        items = []
        for k in range(batch):
            ts = election.ends_at - timedelta(seconds=rng.randrange(60, 3600))
            items.append(
                {
                    "tx_hash": f"fr{time.time_ns():x}{b:06d}{k:05d}",
                    "constituency": rng.choice(constituency_ids),
                    "kind": rng.choice(["bulletin_issued", "vote_cast"]),
                    "timestamp": ts.isoformat(),
                }
            )
        bodies.append(json.dumps(items).encode())

    committed: list[tuple[float, int]] = []  # (arrival of the 201, cumulative created)
    visible: dict[int, float] = {}
    sender_errors: list[str] = []
    done = threading.Event()
    late_sends = 0

    def sender():
        nonlocal late_sends
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        total = 0
        start = time.perf_counter()
        try:
            for i, body in enumerate(bodies):
                due = start + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -interval:
                    late_sends += 1
                status, payload = http_post(conn, "/api/transactions/", body, token)
                if status != 201:
                    sender_errors.append(f"{status}: {payload[:300]!r}")
                    return
                total += json.loads(payload)["created"]
                committed.append((time.perf_counter(), total))
        finally:
            conn.close()
            done.set()

    def poller():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        deadline = None
        try:
            while True:
                conn.request("GET", path, headers={"Accept": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                now = time.perf_counter()
                if response.status == 200:
                    seen = json.loads(payload)["total_transactions"] - base_total
                    for i, (_, cumulative) in enumerate(list(committed)):
                        if i not in visible and cumulative <= seen:
                            visible[i] = now
                if done.is_set():
                    deadline = deadline or now + drain_timeout
                    if len(visible) >= len(committed) or now > deadline:
                        return
                time.sleep(poll)
        finally:
            conn.close()

    threads = [threading.Thread(target=sender), threading.Thread(target=poller)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if sender_errors:
        raise RuntimeError(f"bulk POST failed: {sender_errors[0]}")
    send_seconds = (committed[-1][0] - started) if committed else 0.0
    # A batch never seen within the drain timeout counts as infinitely late, not as missing.
    lags = sorted(visible[i] - committed[i][0] if i in visible else float("inf") for i in range(len(committed)))
    return {
        "batches": len(committed),
        "batch": batch,
        "target_rate": rate,
        "achieved_rate": committed[-1][1] / send_seconds if committed and send_seconds else 0.0,
        "late_sends": late_sends,
        "never_visible": len(committed) - len(visible),
        "lags": lags,
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": lags[-1] if lags else None,
        "poll_interval": poll,
    }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 100))
    return values[int(rank) - 1]
