"""Alert latency: from the commit that opens an episode to its signed POST at a local webhook.

Run by hand (PostgreSQL, Redis and a real Celery worker; see bench/README.md):

    .venv/bin/python -m bench.alerts --samples 200 --interval 0.25

Each sample stores one ``bulletin_issued`` timestamped before the polls open in a constituency
that has no data yet, through the one write path (``transactions_ingest``, as the API does).
That commit marks its bucket dirty; the worker's flush recomputes it, finds an
``outside_voting_window`` anomaly, opens an episode and records its ``opened`` event; the
alerts receiver dispatches it and the worker POSTs it to a receiver in this process. The
latency is the POST's arrival minus the moment ``transactions_ingest`` returned (committed).

Raw limits measured in the same run: the flush debounce (the pipeline waits that long on
purpose to gather a burst) and a signed POST of the same size from this process straight to
the same receiver.
"""

import argparse
import http.client
import http.server
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import env

SECRET = "bench-alerts-secret"
VOTING_STARTS = datetime(2024, 9, 6, 5, 0, tzinfo=UTC)


class Receiver:
    """Records the arrival of each alert's POST by the constituency it is about."""

    def __init__(self):
        self.arrivals: dict[int, float] = {}
        self.types: dict[int, str] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.perf_counter()
                payload = json.loads(body)
                constituency = (payload.get("event") or {}).get("constituency", {}).get("id")
                with receiver.lock:
                    if constituency is not None and constituency not in receiver.arrivals:
                        receiver.arrivals[constituency] = now
                        receiver.types[constituency] = payload["type"]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_post_seconds(port: int, repeats: int = 50) -> float:
    """Median time of a signed POST of an alert-sized body straight to the receiver."""
    from alerts.signing import signature_compute

    body = json.dumps({"type": "raw", "padding": "x" * 600}).encode()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(
            "POST",
            "/",
            body=body,
            headers={
                "Content-Type": "application/json",
                "X-Election-Monitor-Signature": signature_compute(secret=SECRET, body=body),
            },
        )
        conn.getresponse().read()
        conn.close()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(values) * q // 100))
    return values[int(rank) - 1]


def alerts_measure(*, samples: int, interval: float, drain_timeout: float) -> dict:
    from django.conf import settings

    from alerts.models import AlertChannel, AlertDelivery
    from elections.models import Constituency, Election
    from elections.services import TransactionRow, transactions_ingest

    receiver = Receiver()
    code = f"bench-alerts-{time.time_ns():x}"
    election = Election.objects.create(
        code=code,
        name=code,
        timezone="Europe/Moscow",
        starts_at=VOTING_STARTS,
        ends_at=VOTING_STARTS + timedelta(days=3),
    )
    Constituency.objects.bulk_create(
        [
            Constituency(election=election, code=f"b{i:05d}", name=f"B {i}", registered_voters=1000)
            for i in range(samples)
        ]
    )
    ids = list(Constituency.objects.filter(election=election).order_by("id").values_list("id", flat=True))
    channel = AlertChannel.objects.create(
        name=code, kind="webhook", election=election, url=f"http://127.0.0.1:{receiver.port}/", secret=SECRET
    )
    committed: dict[int, float] = {}
    try:
        start = time.perf_counter()
        for i, constituency_id in enumerate(ids):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            row = TransactionRow(
                f"{code}-{i}",
                election.id,
                constituency_id,
                "bulletin_issued",
                VOTING_STARTS - timedelta(minutes=30),
                None,
            )
            transactions_ingest(rows=[row])
            committed[constituency_id] = time.perf_counter()
        deadline = time.perf_counter() + drain_timeout
        while time.perf_counter() < deadline and len(receiver.arrivals) < len(ids):
            time.sleep(0.05)
        raw_post = raw_post_seconds(receiver.port)
    finally:
        receiver.stop()
    lags = sorted(receiver.arrivals[c] - committed[c] if c in receiver.arrivals else float("inf") for c in ids)
    deliveries = AlertDelivery.objects.filter(channel=channel)
    result = {
        "samples": len(ids),
        "interval": interval,
        "received": len(receiver.arrivals),
        "types": sorted(set(receiver.types.values())),
        "deliveries": deliveries.count(),
        "delivered": deliveries.filter(status="delivered").count(),
        "p50": percentile(lags, 50),
        "p90": percentile(lags, 90),
        "p99": percentile(lags, 99),
        "max": lags[-1],
        "debounce": settings.METRICS_FLUSH_DEBOUNCE_SECONDS,
        "raw_post": raw_post,
    }
    channel.enabled = False
    channel.save()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="episodes opened, one per constituency")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between commits")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=1, help="the worker's pool processes")
    parser.add_argument("--queue", default="bench-alerts", help="the bench worker's own Celery queue")
    args = parser.parse_args(argv)

    os.environ["BENCH_QUEUE"] = args.queue
    env.django_start()
    from bench.servers import Worker

    work = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    worker = Worker(work, os.environ["BENCH_QUEUE"], concurrency=args.concurrency)
    try:
        result = alerts_measure(samples=args.samples, interval=args.interval, drain_timeout=args.drain_timeout)
    finally:
        worker.stop()
    floor = result["debounce"] + result["raw_post"]
    print(json.dumps(result, indent=2))
    print(
        f"\nalert latency, commit -> signed POST received, {result['samples']} episodes opened "
        f"every {result['interval']} s, one worker (concurrency {args.concurrency}):\n"
        f"  p50 {result['p50']:.3f} s, p90 {result['p90']:.3f} s, p99 {result['p99']:.3f} s, max {result['max']:.3f} s\n"
        f"  raw floor: debounce {result['debounce']:.3f} s + direct signed POST {result['raw_post'] * 1000:.2f} ms "
        f"= {floor:.3f} s; p50/floor {result['p50'] / floor:.2f}; p99/target(2 s) {result['p99'] / 2:.2f}\n"
        f"  received {result['received']} of {result['samples']}, deliveries {result['deliveries']}, "
        f"delivered {result['delivered']}, types {result['types']}"
    )
    # Exit status: every alert delivered exactly once. The timing is reported, not judged here.
    ok = result["received"] == result["samples"] == result["delivered"] == result["deliveries"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
