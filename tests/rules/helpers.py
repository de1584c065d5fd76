"""Small helpers for rule tests: hand-made hourly aggregates and one-rule sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from altaviz.core import db
from rules.loader import load_rule_set
from rules.schema import RuleSet

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def h(i: int) -> datetime:
    """Hour ``i`` after T0."""
    return T0 + timedelta(hours=i)


def put(conn: psycopg.Connection[Any], org: str, comp: str, metric: str, start: int,
        values: list[float | None], column: str = "mean", running: bool = True) -> None:
    """Insert one aggregate row per hour from ``h(start)``; None leaves the hour missing.

    With ``running`` the unit also gets a speed_rpm row showing it ran the whole hour (rules
    judge only running hours), unless one exists already.
    """
    rows = [(org, comp, metric, h(start + i), 6, v) for i, v in enumerate(values)
            if v is not None]
    if running and metric != "speed_rpm":
        with db.admin(conn), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean,"
                " min, min_4h) SELECT %(org)s, %(comp)s, 'speed_rpm', %(hour)s, 6, 2000, 2000,"
                " 2000 WHERE NOT EXISTS (SELECT 1 FROM sensor_readings_agg WHERE org_id ="
                " %(org)s AND compressor_id = %(comp)s AND metric = 'speed_rpm'"
                " AND hour = %(hour)s)",
                [{"org": r[0], "comp": r[1], "hour": r[3]} for r in rows])
    # an upsert of one column: the view (migration 070) takes INSERT and UPDATE, not ON CONFLICT
    with db.admin(conn), conn.cursor() as cur:
        params = [{"org": o, "comp": c, "metric": m, "hour": t, "n": n, "v": v}
                  for o, c, m, t, n, v in rows]
        cur.executemany(
            f"UPDATE sensor_readings_agg SET {column} = %(v)s WHERE org_id = %(org)s"
            f" AND compressor_id = %(comp)s AND metric = %(metric)s AND hour = %(hour)s",
            params)
        cur.executemany(
            f"INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, {column})"
            f" SELECT %(org)s, %(comp)s, %(metric)s, %(hour)s, %(n)s, %(v)s WHERE NOT EXISTS"
            f" (SELECT 1 FROM sensor_readings_agg WHERE org_id = %(org)s AND compressor_id ="
            f" %(comp)s AND metric = %(metric)s AND hour = %(hour)s)", params)


def one_rule(yaml_rule: str) -> RuleSet:
    """A rule set with the single rule given as YAML (indented under ``rules:``)."""
    text = "rules:\n" + "\n".join("  " + line for line in yaml_rule.strip().splitlines())
    return load_rule_set("test.yaml", text=text)


COMMON = """
  diagnosis: test diagnosis
  checks: [check it]
  basis: test basis
"""


def gold_from_postgres(conn: psycopg.Connection[Any], path: Any) -> str:
    """Write every row of ``sensor_readings_agg`` into a real Delta table at ``path`` in the
    gold schema (etl/lake.py), partitioned by date as the ETL writes it; return its URI.

    The two engines then read the very same hand-made aggregates: PostgreSQL's table and
    DuckDB's delta scan of this one. Columns gold has and PostgreSQL lacks (partial sums,
    flags, batch id) are left empty: no rule reads them.
    """
    import pyarrow as pa
    from deltalake import write_deltalake

    from etl.lake import GOLD_SCHEMA, PARTITIONS

    cols = ["org_id", "compressor_id", "metric", "hour", "n", "min", "max", "outliers", "late",
            "mean", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h", "mean_24h",
            "min_24h", "max_24h", "stddev_24h", "rate_of_change"]
    with db.admin(conn):
        rows = conn.execute(f"SELECT {', '.join(cols)} FROM sensor_readings_agg "
                            "ORDER BY org_id, hour, compressor_id, metric").fetchall()
    data: dict[str, list[Any]] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    data["hour"] = [t.astimezone(UTC) for t in data["hour"]]
    data["date"] = [t.date().isoformat() for t in data["hour"]]
    data["batch_id"] = [1] * len(rows)
    for c in ("sum", "sumsq", "flags"):
        data[c] = [None] * len(rows)
    table = pa.table({f.name: pa.array(data[f.name], f.type) for f in GOLD_SCHEMA},
                     schema=GOLD_SCHEMA)
    uri = str(path)
    write_deltalake(uri, table, mode="overwrite", partition_by=PARTITIONS["gold"])
    return uri
