"""ETL benchmark: 4,500 compressors x 7 days of landing files to PostgreSQL aggregates.

Run as ``.venv/bin/python -m bench.bench_etl`` (``--help`` for sizes). Phases, each in its own
process so its peak RSS is its own:

1. *full*: every landing file except the last arrival hour's, from landing to PostgreSQL
   aggregates (bronze, silver, gold, upsert, data quality).
2. *hour*: the last hour's files for the whole fleet, as the scheduled hourly run sees them.
3. *spark*: the same transformation in PySpark local mode (landing -> validated, deduplicated
   readings -> hourly partials -> 1h/4h/24h windows -> Parquet), if pyspark is installed.

The simulated landing files are cached in the work folder; the lake and the embedded
PostgreSQL are recreated on every run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from altaviz.core import db
from altaviz.core.settings import Settings
from altaviz.core.telemetry import CHANNELS, METRICS
from altaviz.simulator import SimulationConfig, simulate
from bench.fleet_postgres import fleet_postgres
from etl.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parent.parent


def _simulate(work: Path, compressors: int, days: int) -> Path:
    sim = work / f"sim-{compressors}x{days}"
    if (sim / "ground_truth.json").exists():
        return sim

    # calm profile: the ETL quarantines a reading with a null required channel, which field
    # behaviour (dropouts, missing instruments) produces
    simulate(SimulationConfig(compressors=compressors, days=days, seed=42, out=sim,
                              overwrite=True, field=None))
    return sim


def _split_landing(sim: Path, work: Path) -> tuple[Path, int]:
    """A landing folder of symlinks to every file but the last arrival hour's."""
    landing = sim / "landing"
    files = sorted(landing.glob("**/arrival_date=*/*.parquet"), key=lambda p: p.name)
    last_hour = max(p.name[:11] for p in files)
    main = work / "landing-main"
    shutil.rmtree(main, ignore_errors=True)
    held = 0
    for p in files:
        if p.name[:11] == last_hour:
            held += 1
            continue
        target = main / p.relative_to(landing)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(p)
    return main, held


#: Seconds between listings of the child processes by :func:`_sample_tree_rss`. Listing them
#: reads every process's ``/proc/<pid>/stat`` (3.2 ms here with ~80 processes); done at every
#: 50 ms sample it took ~0.4 CPU s of a 4.9 s hourly run (py-spy), on the two cores the ETL
#: and PostgreSQL share. The known children's sizes are still read at every sample; a child
#: living less than this may be missed by the sampled peak, never by the bound (ru_maxrss).
CHILDREN_EVERY_S = 1.0


def _sample_tree_rss(interval: float) -> tuple[list[int], threading.Event]:
    """Start sampling this process's resident size plus its children's every ``interval``
    seconds; returns the running peak (bytes, in a one-item list) and the event that stops it."""
    import psutil

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        children: list[psutil.Process] = []
        listed = float("-inf")
        while not done.wait(interval):
            if time.monotonic() - listed >= CHILDREN_EVERY_S:
                with contextlib.suppress(psutil.Error):
                    children = me.children(recursive=True)
                listed = time.monotonic()
            rss = me.memory_info().rss
            for child in children:
                with contextlib.suppress(psutil.Error):  # it may have ended since the listing
                    rss += child.memory_info().rss
            peak[0] = max(peak[0], rss)

    threading.Thread(target=sample, daemon=True).start()
    return peak, done


def _child(phase: str, db_url: str, landing: Path, lake: Path) -> None:
    """Run one ETL phase and print its figures as JSON.

    Peak memory counts this process and any child processes: sampled every 50 ms as their sum
    (``peak_rss_mb``), and as the bound no sampling can miss, this process's own peak plus the
    largest child's (``peak_rss_mb_bound``). The stages run in this process, as in an ETL
    worker, so both are this process's peak.
    """

    settings = Settings(data_dir=lake.parent, lake_dir=lake, landing_dir=landing,
                        late_arrival_minutes=90)
    marks: dict[str, float] = {}
    cpu: dict[str, float] = {}
    peaks: dict[str, int] = {}
    started = time.perf_counter()
    tree_peak, done = _sample_tree_rss(0.05)

    def cpu_now() -> float:
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def bound_mb() -> int:
        return round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)

    def progress(stage: str, fraction: float) -> None:
        # CPU seconds of this process (all DuckDB threads; PostgreSQL's work is in its own
        # server process) next to wall seconds: on shared cores wall time mostly measures
        # whatever else runs on the machine
        if fraction == 0.0:
            marks[stage + "_start"] = time.perf_counter()
            cpu[stage + "_start"] = cpu_now()
        elif fraction == 1.0:
            marks[stage] = time.perf_counter() - marks.get(stage + "_start", started)
            cpu[stage] = cpu_now() - cpu.get(stage + "_start", 0.0)
            # the peaks only grow: the stage where they jump is the one that set the peak
            peaks[stage] = bound_mb()

    load_before = os.getloadavg()[0]
    summary = run_pipeline(settings, db_url, progress=progress)
    done.set()
    out = {"phase": phase, "seconds": time.perf_counter() - started,
           "stages": {k: round(v, 2) for k, v in marks.items() if not k.endswith("_start")},
           "stage_cpu_seconds": {k: round(v, 2) for k, v in cpu.items()
                                 if not k.endswith("_start")},
           "load_average_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
           "peak_rss_mb_after_stage": peaks,
           "peak_rss_mb": round(tree_peak[0] / 2**20),
           "peak_rss_mb_bound": bound_mb(),
           "peak_rss_mb_parent": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "summary": summary.model_dump(mode="json", exclude={"changed"}),
           "changed_ranges": len(summary.changed)}
    print(json.dumps(out))


def _spark(landing: Path, fleet_json: Path, out_dir: Path) -> None:
    """The same landing -> windows transformation in PySpark local mode (baseline)."""
    import pyarrow.parquet as pq
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    peak, done = _sample_tree_rss(0.2)
    started = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("altaviz-bench")
             .config("spark.driver.memory", "2g").config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    files = sorted(str(p) for p in landing.glob("**/arrival_date=*/*.parquet"))
    typed = [f for f in files if str(pq.read_schema(f).field("oil_temp_f").type) == "double"]
    text = [f for f in files if f not in set(typed)]
    cols = ["compressor_id", "ts", "arrived_at", *(c.name for c in CHANNELS)]
    frames = [spark.read.parquet(*typed).select(*cols)]
    if text:
        tx = spark.read.parquet(*text)
        frames.append(tx.select("compressor_id", "ts", "arrived_at",
                               *(F.expr(f"try_cast({c.name} AS DOUBLE)").alias(c.name)
                                 for c in CHANNELS)))
    raw = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    fleet = json.loads(fleet_json.read_text())
    orgs = spark.createDataFrame([(c["compressor_id"], c["org_id"]) for c in
                                  fleet["compressors"]], ["compressor_id", "org_id"])
    ok = F.col("org_id").isNotNull() & F.col("ts").isNotNull()
    # a bad channel value is that channel missing; the rest of the reading is kept
    cleaned = raw.select("compressor_id", "ts", "arrived_at", *(
        F.when(F.col(c.name).between(c.low, c.high), F.col(c.name)).alias(c.name)
        for c in CHANNELS))
    readings = (cleaned.join(F.broadcast(orgs), "compressor_id", "left").where(ok)
                .dropDuplicates(["compressor_id", "ts"])
                .withColumn("late", (F.col("arrived_at").cast("long") - F.col("ts").cast("long"))
                            > 90 * 60)
                .withColumn("hour", F.date_trunc("hour", "ts")))
    metric_cols = [F.expr(m.sql).alias(m.name) for m in METRICS]
    wide = readings.select("org_id", "compressor_id", "hour", "late", *metric_cols)
    stack = ", ".join(f"'{m.name}', `{m.name}`" for m in METRICS)
    long = wide.select("org_id", "compressor_id", "hour", "late",
                       F.expr(f"stack({len(METRICS)}, {stack}) AS (metric, value)")
                       ).where(F.col("value").isNotNull())
    partials = long.groupBy("org_id", "compressor_id", "metric", "hour").agg(
        F.count("value").alias("n"), F.sum("value").alias("s"),
        F.sum(F.col("value") * F.col("value")).alias("q"), F.min("value").alias("mn"),
        F.max("value").alias("mx"), F.sum(F.col("late").cast("int")).alias("late"))
    t = F.col("hour").cast("long")
    base = Window.partitionBy("compressor_id", "metric").orderBy(t)
    w4, w24 = base.rangeBetween(-3 * 3600, 0), base.rangeBetween(-23 * 3600, 0)

    def std(n: Any, s: Any, q: Any) -> Any:
        return F.when(n > 1, F.sqrt(F.greatest(q - s * s / n, F.lit(0.0)) / (n - 1)))

    feats = partials
    for name, w in (("4h", w4), ("24h", w24)):
        n, s, q = F.sum("n").over(w), F.sum("s").over(w), F.sum("q").over(w)
        feats = (feats.withColumn(f"mean_{name}", s / n).withColumn(f"std_{name}", std(n, s, q))
                 .withColumn(f"min_{name}", F.min("mn").over(w))
                 .withColumn(f"max_{name}", F.max("mx").over(w)))
    feats = (feats.withColumn("mean", F.col("s") / F.col("n"))
             .withColumn("stddev", std(F.col("n"), F.col("s"), F.col("q")))
             .withColumn("rate_of_change", F.when(
                 F.lag("hour").over(base) == F.col("hour") - F.expr("INTERVAL 1 HOUR"),
                 F.col("mean") - F.lag(F.col("s") / F.col("n")).over(base)))
             .withColumn("date", F.to_date("hour")))
    feats.write.mode("overwrite").partitionBy("date").parquet(str(out_dir))
    seconds = time.perf_counter() - started
    rows = spark.read.parquet(str(out_dir)).count()
    spark.stop()
    done.set()
    print(json.dumps({"phase": "spark", "seconds": seconds, "rows": rows,
                      "peak_rss_mb_python_plus_jvm": peak[0] / 2**20}))


def _run_child(*args: str, module: str = "bench.bench_etl") -> dict[str, Any]:
    """Run ``python -m module *args`` and return the JSON of its last output line."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fleet_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The arguments every ETL benchmark takes: the simulated fleet and the work folder."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compressors", type=int, default=4500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--work", type=Path, default=Path("/tmp/altaviz-bench-etl"),
                        help="work folder (simulated files are cached here)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures (a Markdown table for docs/BENCHMARKS.md)."""
    parser = fleet_parser("bench.bench_etl", __doc__)
    parser.add_argument("--no-spark", action="store_true", help="skip the PySpark baseline")
    parser.add_argument("--login", choices=("etl", "superuser"), default="etl",
                        help="who the ETL logs in as: the ETL login, as in production "
                             "(default), or the server's superuser, which bypasses row-level "
                             "security")
    parser.add_argument("--child", nargs=4, metavar=("PHASE", "DB", "LANDING", "LAKE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--spark-child", nargs=3, metavar=("LANDING", "FLEET", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phase, db_url, landing, lake = args.child
        _child(phase, db_url, Path(landing), Path(lake))
        return 0
    if args.spark_child:
        landing, fleet, out = args.spark_child
        _spark(Path(landing), Path(fleet), Path(out))
        return 0

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    sim = _simulate(work, args.compressors, args.days)
    print(f"simulated landing files ready in {time.perf_counter() - t:.1f} s: {sim}")
    main_landing, held = _split_landing(sim, work)
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    pgdata = work / "pg"
    shutil.rmtree(pgdata, ignore_errors=True)
    try:
        with fleet_postgres(pgdata, sim / "fleet.json", cleanup_mode="delete") as url:
            etl_url = url
            if args.login == "etl":   # the benchmark's server trusts local connections
                with db.connect(url) as conn:
                    etl_url = make_conninfo(url, user=db.role_names(conn)["etl"])
            full = _run_child("--child", "full", etl_url, str(main_landing), str(lake))
            print("full:", json.dumps(full))
            hour = _run_child("--child", "hour", etl_url, str(sim / "landing"), str(lake))
            print("hour:", json.dumps(hour))
            with db.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM sensor_readings_agg").fetchone()
                agg_rows = int(row[0]) if row else 0
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)
    spark: dict[str, Any] | None = None
    if not args.no_spark:
        try:
            import pyspark  # noqa: F401
        except ImportError:
            print("pyspark is not installed: no baseline (pip install -e '.[bench]')")
        else:
            spark = _run_child("--spark-child", str(main_landing), str(sim / "fleet.json"),
                               str(work / "spark-out"))
            print("spark:", json.dumps(spark))
    # the same transformation as the Spark job: landing -> validated rows -> gold windows
    to_gold = sum(full["stages"].get(k, 0.0) for k in ("bronze", "silver", "gold"))
    print(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                      "login": args.login,
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                      "files_held_for_hour": held, "agg_rows": agg_rows,
                      "landing_to_gold_s": round(to_gold, 1),
                      "spark_s": spark["seconds"] if spark else None,
                      "spark_over_altaviz_landing_to_gold": (
                          round(spark["seconds"] / to_gold, 2) if spark and to_gold else None)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
