"""The processes a run starts: gunicorn (the product's WSGI app under bench settings) and one
Celery worker on the bench queue. Each is started and stopped by its own pid; a run never
touches processes it did not start."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.env import ROOT

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "w")  # noqa: SIM115 -- the server's log, closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            # Its own session: the signal reaches the master and its children, nothing else.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Gunicorn(Process):
    def __init__(self, log_dir: Path, workers: int):
        self.port = free_port()
        self.workers = workers
        self.argv_shown = (
            f"gunicorn election_monitor.wsgi:application --bind 127.0.0.1:{self.port} "
            f"--workers {workers} --worker-class sync --log-level warning"
        )
        super().__init__(
            "gunicorn",
            [
                str(VENV_BIN / "gunicorn"),
                "election_monitor.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--log-level",
                "warning",
                "--timeout",
                "120",
            ],
            log_dir / "gunicorn.log",
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"gunicorn exited:\n{self.tail()}")
            try:
                status, _ = http_get(self.port, "/bench/static/")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout}s:\n{self.tail()}")


class Worker(Process):
    def __init__(self, log_dir: Path, queue: str, concurrency: int = 1):
        self.argv_shown = (
            f"celery -A election_monitor worker --queues {queue} --concurrency {concurrency} --pool prefork"
        )
        super().__init__(
            "celery worker",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "election_monitor",
                "worker",
                "--queues",
                queue,
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"bench-{os.getpid()}@%h",
            ],
            log_dir / "worker.log",
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"celery worker exited:\n{self.tail()}")
            if " ready." in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"celery worker not ready within {timeout}s:\n{self.tail()}")


def http_get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_get_json(port: int, path: str) -> dict:
    status, body = http_get(port, path)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    return json.loads(body)


def http_post(conn: http.client.HTTPConnection, path: str, body: bytes, token: str) -> tuple[int, bytes]:
    conn.request(
        "POST",
        path,
        body=body,
        headers={"Content-Type": "application/json", "Accept": "application/json", "Authorization": f"Token {token}"},
    )
    response = conn.getresponse()
    return response.status, response.read()
