"""Items 2 and 7: import_transactions and the bulk API against raw COPY of the same rows, and
the import's peak memory.

Every measurement writes the same synthesized rows (only the 4-character tag at the start of
each tx_hash differs, so nothing is a duplicate) into the same empty ingest election of the
big database, and the rows are deleted again before the next one: each path meets the same
table, with the big election's millions of index entries in it.
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.db import connection

from bench import generate
from bench.env import ROOT
from bench.servers import http_post


def variant_path(source: Path, tag: str, *, skip_header: bool) -> Path:
    """A copy of ``source`` whose tx_hashes start with ``tag`` instead of ``0000``."""
    assert len(tag) == 4
    target = source.with_name(f"{source.stem}-{tag}{source.suffix}")
    with open(source) as src, open(target, "w") as dst:
        if skip_header:
            dst.write(src.readline())
        dst.writelines(tag + line[4:] for line in src)
    return target


def election_rows_delete(election_id: int) -> None:
    """Empty the ingest election between measurements (set-based; untimed)."""
    # Episode events through the ORM: the alert records that reference them (alerts app) go
    # with them; they are few, one per episode change.
    from metrics.models import EpisodeEvent

    EpisodeEvent.objects.filter(election_id=election_id).delete()
    with connection.cursor() as cursor:
        for table in (
            "metrics_dirtybucket",
            "metrics_episode",
            "metrics_anomaly",
            "metrics_hourlystats",
            "elections_transaction",
        ):
            cursor.execute(f"DELETE FROM {table} WHERE election_id = %s", [election_id])


def raw_copy(copy_path: Path) -> float:
    """COPY of pre-rendered rows (ids resolved, hour derived) into the transaction table with
    all its indexes and foreign keys: what PostgreSQL alone can take."""
    started = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY elections_transaction ({', '.join(generate.COPY_COLUMNS)}) FROM STDIN") as copy,
        open(copy_path, "rb") as source,
    ):
        while chunk := source.read(generate.CHUNK):
            copy.write(chunk)
    return time.perf_counter() - started


def _high_water_mark(pid: int, peak: list[int], done: threading.Event) -> None:
    """Follow the kernel's VmHWM (peak RSS) of the command until it exits.

    Subtle: neither ru_maxrss nor VmHWM can be taken as is at the start: between fork and
    exec the child maps the harness's own memory, and ru_maxrss keeps that maximum. exec
    starts a fresh address space whose VmHWM starts at zero, so readings count only once
    the process runs manage.py."""
    while not done.is_set():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"manage.py" in cmdline.read():
                    with open(f"/proc/{pid}/status") as status:
                        for line in status:
                            if line.startswith("VmHWM:"):
                                peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:
            pass
        done.wait(0.01)


def command_peak_rss(argv: list[str], *, timeout: float) -> dict:
    """Wall time and peak RSS (VmHWM, followed while it runs) of one manage.py command."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak, done = [0], threading.Event()
    out_chunks, err_chunks = [], []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read())),
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read())),
        threading.Thread(target=_high_water_mark, args=(proc.pid, peak, done)),
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        # The last VmHWM reading is taken while the process still exists: wait for its exit
        # without reaping it, so /proc/<pid> stays readable until the watcher has read it.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        done.set()
        readers[2].join()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        done.set()
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    out = b"".join(out_chunks).decode(errors="replace")
    err = b"".join(err_chunks).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(argv)} exited {proc.returncode}: {(err or out)[-1500:]}")
    if not peak[0]:
        raise RuntimeError(f"no VmHWM reading of manage.py {' '.join(argv)}")
    return {"seconds": seconds, "peak_rss_mb": peak[0] / 1024, "stdout": out[-1500:], "stderr": err[-1500:]}


def api_bodies(copy_path: Path, *, tag: str, rows: int, batch: int, constituency_ids: dict) -> list[tuple[bytes, int]]:
    """Pre-encoded JSON lists for POST /api/transactions/ (encoded before the clock starts, so
    the client's own cost stays out of the figure)."""
    items = []
    with open(copy_path) as source:
        for line in source:
            if len(items) >= rows:
                break
            tx_hash, _, constituency_id, kind, ts, _, block, _ = line.rstrip("\n").split("\t")
            items.append(
                {
                    "tx_hash": tag + tx_hash[4:],
                    "constituency": int(constituency_id),
                    "kind": kind,
                    "timestamp": ts.replace(" ", "T").replace("+00", "+00:00"),
                    "block_number": int(block),
                }
            )
    return [(json.dumps(items[i : i + batch]).encode(), len(items[i : i + batch])) for i in range(0, len(items), batch)]


def api_post_all(port: int, token: str, bodies: list[tuple[bytes, int]], *, clients: int) -> dict:
    """Send the bodies from ``clients`` threads; every answer must be 201 with all created."""
    errors: list[str] = []
    created = [0] * clients

    def worker(index: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for body, _count in bodies[index::clients]:
                status, payload = http_post(conn, "/api/transactions/", body, token)
                if status != 201:
                    errors.append(f"{status}: {payload[:300]!r}")
                    return
                created[index] += json.loads(payload)["created"]
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"bulk POST failed: {errors[0]}")
    return {"seconds": seconds, "created": sum(created)}
