"""Item 6: read endpoints under gunicorn with wrk at 32 connections, against a static DRF
view served by the same server; and the uncached election metrics."""

import re
import shutil
import statistics
import subprocess
import time

from bench.servers import http_get

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    if not wrk_available():
        return "wrk not installed"
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


def wrk(port: int, path: str, *, connections: int, seconds: float, threads: int = 2) -> dict:
    """Requests/s and latency percentiles; non-2xx answers and socket errors are reported, and a
    run with any of them is an error (a fast 500 is not throughput)."""
    url = f"http://127.0.0.1:{port}{path}"
    status, body = http_get(port, path)  # warm: fills the cache the measured requests read
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        latency[int(pct)] = float(value) * UNITS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    result = {
        "path": path,
        "rps": rps,
        "p50": latency.get(50),
        "p99": latency.get(99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
        "command": " ".join(argv),
    }
    if result["non_2xx"]:
        raise RuntimeError(f"wrk {path}: {result['non_2xx']} non-2xx answers\n{out}")
    return result


def uncached_latencies(port: int, path: str, *, election_id: int, repeats: int) -> list[float]:
    """Each request right after the election's cache version is bumped (what a recompute does),
    so every answer is computed from the database."""
    from django.db import transaction

    from metrics.cache import metrics_cache

    latencies = []
    for _ in range(repeats):
        with transaction.atomic():
            metrics_cache.election_version_bump(election_id)
        started = time.perf_counter()
        status, body = http_get(port, path)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    return latencies


def single_latency(port: int, path: str, repeats: int = 20) -> float:
    latencies = []
    for _ in range(repeats):
        started = time.perf_counter()
        http_get(port, path)
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)
