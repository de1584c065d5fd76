"""The full load's floor: only the writes the ETL's design prescribes, timed next to the real load.

Run as ``.venv/bin/python -m bench.bench_floor`` (``--help`` for sizes). Why: the full-load
target (4,500 compressors x 7 days, landing files to PostgreSQL aggregates, under 20 s on two
cores) is missed by the ETL. This benchmark measures how long the prescribed storage (Delta
bronze, silver and gold, PostgreSQL's hourly aggregates) takes to *write* on this machine, with
no validation, no deduplication, no baselines and no windows, so that what is left to optimise
and what would need another design can be told apart.

In one run:

1. **the real full load** (``bench.bench_etl``'s full phase: every landing file but the last
   arrival hour's, through all five stages, in a fresh lake and PostgreSQL);
2. **the floor**, in a child process, from the real load's own outputs (reading them back is
   not timed, except the landing files, which the ETL has to read):

   * *landing -> bronze*: every landing file read with pyarrow, the bookkeeping columns
     added as constants, one append to a fresh bronze table (``etl.lake.Lake.append``: the
     same schema, partitions and writer properties as the ETL);
   * *silver*: the real silver rows, one date partition at a time, appended to a fresh
     silver table;
   * *gold*: the real gold rows, likewise;
   * *PostgreSQL*: the real ``agg_compressor_hours`` rows, exported to binary COPY files
     (two halves by compressor), then copied back by two sessions at once into two fresh
     tables with the same columns and storage but no key, index, trigger or row-level
     security, with autovacuum off and after a checkpoint (the real load's month partitions
     are vacuumed on both cores for a minute or more after it); PostgreSQL's own CPU is read
     from ``/proc``.

The floor's stages are summed as if they ran one after another, and also as CPU seconds: on
two cores no schedule of the same work finishes in less than half of its CPU seconds. The
client's side of the COPY (encoding 288 M array elements) is not in the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql

from altaviz.core.telemetry import CHANNELS
from bench.bench_etl import _run_child, _simulate, _split_landing, fleet_parser
from bench.fleet_postgres import fleet_postgres
from etl.lake import BRONZE_SCHEMA, Lake, conform

_HZ = os.sysconf("SC_CLK_TCK")
_NUMBER = r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"
_CHANNEL_NAMES = {c.name for c in CHANNELS}
#: Columns of ``agg_compressor_hours`` the ETL writes (migration 070), in COPY order.
_AGG_COLUMNS = ("org_id", "compressor_id", "hour", "n", "mean", "min", "max", "stddev",
                "mean_4h", "min_4h", "max_4h", "stddev_4h", "mean_24h", "min_24h", "max_24h",
                "stddev_24h", "rate_of_change", "outliers", "late")


class _ServerCpu:
    """CPU seconds used by every ``postgres`` process while it runs, including backends that
    start and exit meanwhile (``/proc`` read every 50 ms; a process's last reading counts)."""

    def __init__(self) -> None:
        self._base = self._read()
        self._last = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if not stat[stat.index("(") + 1:].startswith("postgres"):
                continue
            rest = stat[stat.rindex(")") + 2:].split()
            # (pid, start time): a reused pid is another process
            out[(pid, rest[19])] = (int(rest[11]) + int(rest[12])) / _HZ
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._last.update(self._read())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._last.update(self._read())
        return sum(t - self._base.get(k, 0.0) for k, t in self._last.items())


def _own_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _timed(figures: dict[str, Any], name: str, work: Callable[[], Any],
           server: bool = False) -> None:
    """Run ``work`` and record its wall and CPU seconds (this process's; with ``server``,
    PostgreSQL's too) under ``name``."""
    cpu0, t0 = _own_cpu(), time.perf_counter()
    watch = _ServerCpu() if server else None
    work()
    out = {"seconds": round(time.perf_counter() - t0, 2),
           "cpu_seconds": round(_own_cpu() - cpu0, 2)}
    if watch is not None:
        out["server_cpu_seconds"] = round(watch.stop(), 2)
    figures[name] = out


def _bronze(landing: Path, lake: Any) -> int:
    """Landing files to a bronze append, with nothing checked: each file read by pyarrow as
    delta-rs asks for the next batch, the bookkeeping columns added as constants."""

    files = sorted(landing.glob("**/arrival_date=*/*.parquet"))
    loaded_at = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    rows = [0]

    def constant(value: pa.Scalar, n: int) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                              pa.array([value])).cast(value.type)

    def batches() -> Iterator[pa.RecordBatch]:
        for f in files:
            with pq.ParquetFile(f) as parquet:
                t = parquet.read()
            n = t.num_rows
            for i, field in enumerate(t.schema):
                if field.name in _CHANNEL_NAMES and pa.types.is_string(field.type):
                    # a text file (the gateways' other format): what is not a number is null
                    text = pc.utf8_trim_whitespace(t.column(i))
                    number = pc.match_substring_regex(text, _NUMBER)
                    t = t.set_column(i, field.name, pc.if_else(number, text, None).cast(
                        pa.float64()))
            t = (t.append_column("invalid_values", pa.nulls(n, pa.string()))
                 .append_column("source_file", constant(pa.scalar(f.name), n))
                 .append_column("source_row", pa.array(np.arange(n, dtype=np.int64)))
                 .append_column("batch_id", constant(pa.scalar(1, pa.int64()), n))
                 .append_column("loaded_at", constant(loaded_at, n))
                 .append_column("arrival_date", constant(pa.scalar(f.parent.name[13:]), n)))
            rows[0] += n
            yield from conform(t, BRONZE_SCHEMA).to_batches()

    lake.append("bronze", pa.RecordBatchReader.from_batches(BRONZE_SCHEMA, batches()), 1)
    return rows[0]


def _copy_table(source: Any, target: Any, table: str, figures: dict[str, Any]) -> None:
    """Append ``table``'s rows of ``source`` to ``target`` one date partition at a time;
    only the appends are timed (summed under ``table``)."""
    dt = source.table(table)
    dates = sorted(set(pa.table(dt.get_add_actions(flatten=True)).column(
        "partition.date").to_pylist()))
    wall = cpu = 0.0
    rows = 0
    for i, day in enumerate(dates):
        data = dt.to_pyarrow_table(filters=[("date", "=", day)])
        rows += data.num_rows
        cpu0, t0 = _own_cpu(), time.perf_counter()
        target.append(table, data, i + 1)
        wall += time.perf_counter() - t0
        cpu += _own_cpu() - cpu0
        del data
    figures[table] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "rows": rows}


def _quiet(conn: psycopg.Connection[Any], limit: float = 600.0) -> float:
    """Turn autovacuum off and wait until no worker runs (the real load's month partitions
    are vacuumed a minute or two after it, on both cores: that would be measured too), then
    checkpoint; the seconds waited. The server is the benchmark's own and is deleted after."""
    conn.execute("ALTER SYSTEM SET autovacuum = off")
    conn.execute("SELECT pg_reload_conf()")
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE backend_type = 'autovacuum worker'").fetchone()
        if not row or row[0] == 0:
            break
        time.sleep(1.0)
    conn.execute("CHECKPOINT")
    return round(time.perf_counter() - started, 1)


def _export(db_url: str, parts: list[Path], cols: sql.Composable,
            figures: dict[str, Any]) -> None:
    """The aggregates' rows into two binary COPY files (halves by compressor), two bare
    tables to copy them back into, and a quiet server."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM agg_compressor_hours").fetchone()
        figures["postgres_rows"] = int(rows[0]) if rows else 0
        for i, path in enumerate(parts):
            with conn.cursor().copy(sql.SQL(
                    "COPY (SELECT {} FROM agg_compressor_hours WHERE hashtext(compressor_id) "
                    "& 1 = {}) TO STDOUT (FORMAT binary)").format(cols, sql.Literal(i))
                                    ) as copy, path.open("wb") as out:
                for data in copy:
                    out.write(data)
            name = sql.Identifier(f"floor_agg_{i}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
            # the same columns and PLAIN storage; no key, index, trigger or policy
            conn.execute(sql.SQL(
                "CREATE TABLE {} (LIKE agg_compressor_hours INCLUDING STORAGE "
                "INCLUDING DEFAULTS) WITH (autovacuum_enabled = false)").format(name))
        figures["postgres_copy_bytes"] = sum(p.stat().st_size for p in parts)
        figures["postgres_quiet_after_s"] = _quiet(conn)


def _copy_back(db_url: str, parts: list[Path], cols: sql.Composable) -> None:
    """COPY file ``i`` into table ``floor_agg_<i>``, all files at once on connections of their
    own (the server runs as another system user: the files go through the client)."""
    def copy_in(i: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor().copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                    sql.Identifier(f"floor_agg_{i}"), cols)) as copy, \
                parts[i].open("rb") as source:
            while data := source.read(1 << 20):
                copy.write(data)

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        for f in [pool.submit(copy_in, i) for i in range(len(parts))]:
            f.result()


def _postgres(db_url: str, work: Path, figures: dict[str, Any]) -> None:
    """The aggregates' rows copied back into bare tables by two sessions at once."""
    parts = [work / f"agg-{i}.copy" for i in range(2)]
    cols = sql.SQL(", ").join(map(sql.Identifier, _AGG_COLUMNS))
    try:
        _export(db_url, parts, cols, figures)
        _timed(figures, "postgres", lambda: _copy_back(db_url, parts, cols), server=True)
    finally:
        for path in parts:  # 3.3 GB for the default fleet
            path.unlink(missing_ok=True)


def _floor_child(db_url: str, landing: Path, lake_dir: Path, work: Path) -> None:
    """Measure the floor in this process; print its figures as JSON."""

    real = Lake(lake_dir)
    scratch = Lake(work / "floor-lake")
    shutil.rmtree(scratch.root, ignore_errors=True)
    scratch.ensure()
    figures: dict[str, Any] = {}
    _timed(figures, "landing_to_bronze", lambda: _bronze(landing, scratch))
    _copy_table(real, scratch, "silver", figures)
    _copy_table(real, scratch, "gold", figures)
    shutil.rmtree(scratch.root, ignore_errors=True)
    _postgres(db_url, work, figures)
    print(json.dumps(figures))


def main(argv: list[str] | None = None) -> int:
    """Run the real full load and the floor; print both (JSON, last line: the summary)."""
    parser = fleet_parser("bench.bench_floor", __doc__)
    parser.add_argument("--floor-child", nargs=4, metavar=("DB", "LANDING", "LAKE", "WORK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_child:
        db_url, landing_dir, lake_dir, work_dir = args.floor_child
        _floor_child(db_url, Path(landing_dir), Path(lake_dir), Path(work_dir))
        return 0

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    sim = _simulate(work, args.compressors, args.days)
    landing, _ = _split_landing(sim, work)
    lake = work / "lake"
    pgdata = work / "pg"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.rmtree(pgdata, ignore_errors=True)
    try:
        with fleet_postgres(pgdata, sim / "fleet.json", cleanup_mode="delete") as url:
            print("the real full load ...", file=sys.stderr, flush=True)
            full = _run_child("--child", "full", url, str(landing), str(lake))
            print("full:", json.dumps({k: full[k] for k in ("seconds", "stages",
                                                            "stage_cpu_seconds")}))
            print("the floor ...", file=sys.stderr, flush=True)
            floor = _run_child("--floor-child", url, str(landing), str(lake), str(work),
                               module="bench.bench_floor")
            print("floor:", json.dumps(floor))
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)
    parts = ("landing_to_bronze", "silver", "gold", "postgres")
    wall = sum(floor[p]["seconds"] for p in parts)
    cpu = sum(floor[p]["cpu_seconds"] + floor[p].get("server_cpu_seconds", 0.0)
              for p in parts)
    print(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
        "silver_rows": floor["silver"]["rows"],
        "full_load_s": round(full["seconds"], 1),
        "floor_s_one_after_another": round(wall, 1),
        "floor_cpu_s": round(cpu, 1),
        "floor_s_two_cores_at_best": round(cpu / 2, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
