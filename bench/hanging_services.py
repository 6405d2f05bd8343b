"""What a hanging Redis or broker costs a request, with and without the circuit breakers.

Two TCP listeners on 127.0.0.1 accept connections and never answer; the product's own
settings (cache timeouts 0.5 s, broker socket timeouts from CELERY_BROKER_TRANSPORT_OPTIONS)
point at them, on a throwaway SQLite database. Requests go through Django's test client:
real views, real middleware, real after-commit flush requests (no test transaction). The
same requests run with the breakers (CIRCUIT_BREAKER_RESET_SECONDS=5) and without them
(0: every call tries the service again, the behaviour before the breakers).

    .venv/bin/python bench/hanging_services.py [--requests 20]
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def hanging_listener() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0), backlog=128)
    held = []

    def serve():
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            held.append(client)  # never read, never answered, never closed

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()

    _, cache_port = hanging_listener()
    _, broker_port = hanging_listener()
    workdir = Path(tempfile.mkdtemp(prefix="em-hanging-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        REDIS_URL=f"redis://127.0.0.1:{cache_port}/0",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
        DJANGO_SETTINGS_MODULE="election_monitor.settings",
        LOG_LEVEL="CRITICAL",
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from election_monitor.resilience import breakers_reset
    from elections.tests.factories import ConstituencyFactory, ElectionFactory

    call_command("migrate", verbosity=0)
    election = ElectionFactory(code="hanging")
    constituency = ConstituencyFactory(election=election)
    staff = User.objects.create_user("bench", is_staff=True)
    writer = APIClient()
    writer.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    reader = APIClient()

    def timed(call) -> float:
        started = time.perf_counter()
        response = call()
        assert response.status_code < 500, response.status_code
        return time.perf_counter() - started

    counter = iter(range(10**9))

    def write():
        body = {
            "tx_hash": f"0xhang{next(counter)}",
            "constituency": constituency.id,
            "kind": "vote_cast",
            "timestamp": (election.starts_at + timedelta(minutes=5)).isoformat(),
        }
        return writer.post("/api/transactions/", body, format="json")

    def read():
        return reader.get(f"/api/metrics/election/{election.id}/")

    read(), write()  # warm-up: URL resolvers, imports, first connections
    print(f"{args.requests} requests each; cache and broker both hang (accept, never answer)")
    print(f"{'path':<34}{'breaker':>8}{'first s':>10}{'median s':>10}{'total s':>10}")
    for label, call in (("GET /api/metrics/election/{id}/", read), ("POST /api/transactions/", write)):
        for reset in (5.0, 0.0):
            settings.CIRCUIT_BREAKER_RESET_SECONDS = reset
            breakers_reset()
            durations = [timed(call) for _ in range(args.requests)]
            print(
                f"{label:<34}{'on' if reset else 'off':>8}{durations[0]:>10.3f}"
                f"{statistics.median(durations[1:]):>10.4f}{sum(durations):>10.2f}"
            )


if __name__ == "__main__":
    main()
