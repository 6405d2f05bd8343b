"""Fixtures for alerts: a real webhook receiver (http.server on 127.0.0.1, port 0) that checks
signatures on its own, channels, episode events, and the real Celery worker of the metrics
tests."""

import hashlib
import hmac
import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import AlertChannel
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics.models import EpisodeEvent

# The real worker's helpers, shared with the metrics tests.
from metrics.tests.fixtures import WorkerProcess, require_worker_environment, test_database_url

SECRET = "receiver-test-secret-0123456789"


@pytest.fixture
def worker(django_db_setup, django_db_blocker, tmp_path):
    """A real worker of its own for each test, and the only one running.

    Subtle: the metrics tests' session worker has the same node name and consumes the same
    queue; two workers would share the deliveries (and a kill -9 would hit only one). It is
    shut down first; the metrics fixture restarts it when its tests need it again.
    """
    require_worker_environment()
    with django_db_blocker.unblock():
        process = WorkerProcess(test_database_url(), tmp_path / "worker.log")
    deadline = time.monotonic() + 30
    while process.app.control.ping(destination=[process.name], timeout=0.5):
        process.app.control.broadcast("shutdown", destination=[process.name])
        if time.monotonic() > deadline:
            raise AssertionError("the metrics tests' worker did not shut down")
    process.start()
    process.purge()
    yield process
    if process.alive:
        process.wait_idle()
    process.purge()
    process.stop()


@dataclass
class ReceivedPost:
    path: str
    headers: dict
    body: bytes
    arrived: float
    signature_ok: bool
    answered: int

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers.get("x-election-monitor-delivery", "")


@dataclass
class WebhookReceiver:
    """A local HTTP server that records every POST, answers the statuses queued in
    ``statuses`` (then 200), and holds requests while ``hold`` is set."""

    secret: str = SECRET
    statuses: list[int] = field(default_factory=list)
    posts: list[ReceivedPost] = field(default_factory=list)
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Checked here, independently of alerts.signing.
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                signature_ok = hmac.compare_digest(expected, self.headers.get("X-Election-Monitor-Signature", ""))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.posts.append(
                        ReceivedPost(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            arrived=time.monotonic(),
                            signature_ok=signature_ok,
                            answered=status,
                        )
                    )
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self.lock:
            return len(self.posts)


@pytest.fixture
def receiver():
    hook = WebhookReceiver()
    hook.start()
    yield hook
    hook.stop()


@pytest.fixture
def alert_settings(settings):
    """Retries without waiting, so the in-process (eager) path runs a whole retry chain."""
    settings.ALERTS_RETRY_BASE_SECONDS = 0
    settings.ALERTS_HTTP_TIMEOUT = 2
    return settings


def webhook_channel(receiver, *, election=None, **fields) -> AlertChannel:
    return AlertChannel.objects.create(
        name=fields.pop("name", "hook"),
        kind="webhook",
        url=receiver.url,
        secret=receiver.secret,
        election=election,
        **fields,
    )


def email_channel(*, election=None, recipients="observer@example.org", **fields) -> AlertChannel:
    return AlertChannel.objects.create(
        name=fields.pop("name", "mail"), kind="email", recipients=recipients, election=election, **fields
    )


def episode_event(constituency, *, event="opened", kind="turnout_over_100", hour=0, **fields) -> EpisodeEvent:
    first_hour = VOTING_STARTS + timedelta(hours=hour)
    payload = {
        "constituency_id": constituency.id,
        "kind": kind,
        "first_hour": first_hour.isoformat(),
        "last_hour": first_hour.isoformat(),
        "hours": 1,
        "peak": 102.5,
        "open": event == "opened",
        "weight": 5.0,
    }
    return EpisodeEvent.objects.create(
        election_id=constituency.election_id,
        constituency=constituency,
        kind=kind,
        first_hour=first_hour,
        event=event,
        payload=payload,
        **fields,
    )


@pytest.fixture
def two_elections(db):
    """Two elections with two constituencies each."""
    first = ElectionFactory(code="first")
    second = ElectionFactory(code="second")
    for election in (first, second):
        ConstituencyFactory.create_batch(2, election=election, registered_voters=1000)
    return first, second


@pytest.fixture
def long_ago():
    return timezone.now() - timedelta(hours=1)
