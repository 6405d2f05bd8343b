"""CI smoke run of bench/alerts.py at tiny scale: every opened episode's alert arrives, once.
It asserts no timing (docs/PERFORMANCE.md has the figures)."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.env import database_drop
from bench.test_bench_smoke import smoke_environment

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.worker, pytest.mark.slow]


def test_alerts_bench_delivers_every_opened_episode_once():
    env = smoke_environment()
    parts = urlsplit(env["BENCH_DATABASE_URL"])
    env["BENCH_DATABASE_URL"] = urlunsplit(parts._replace(path=f"{parts.path}_alerts"[:64]))
    queue = f"bench-alerts-smoke-{os.getpid()}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.alerts", "--samples", "5", "--interval", "0.1", "--queue", queue],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        database_drop(env["BENCH_DATABASE_URL"])
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "received 5 of 5, deliveries 5, delivered 5, types ['episode.opened']" in result.stdout
