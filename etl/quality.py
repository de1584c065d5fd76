"""Data quality per organization and compressor, recorded in ``data_quality_checks``.

For the batches this stage has not checked yet (mark in ``etl_stage_progress``):

* **completeness**: the compressor-hours the batches touched, filled in to a contiguous range
  per compressor so wholly silent hours count too, and only hours already over (``hour + 1 h
  <= as_of``). Missing share = 1 - readings/6 per hour; ``measured`` is the share over the
  range, failing above 5%, with the number of compressor-hours above 5% in ``details``.
  Hours inside a maintenance window of the unit (its own, its site's) are planned downtime,
  not missing data: they count as complete, and ``details`` gives ``planned_hours`` (when
  there are any).
* **consistency**: schema violations, i.e. quarantined rows / rows received for the
  compressor (rows whose compressor is unknown cannot be attributed to an organization and
  are only counted in the run summary). Fails above 1%.
* **accuracy**: values a unit got wrong, per channel, judged only where the physics says a
  value should be steady: readings taken while the unit runs, more than
  :data:`SETTLE_READINGS` readings (the start-up recovery) after it was last stopped and not
  the last reading before a stop (warm-up and cool-down move every temperature far from its
  running baseline). A channel's value is wrong when silver flagged it as a 4-sigma outlier
  (speed and flow excepted: the operator moves them with load, which is operation, not bad
  data) or when the channel has repeated one value for :data:`STUCK_READINGS` readings while
  the unit ran (a frozen transmitter; live values vary). ``measured`` is the worst channel's
  share of the judged readings, counting only channels with at least
  :data:`ACCURACY_MIN_WRONG` wrong values (an isolated flag is noise); fails above 2%.
  ``details`` names each wrong channel with its outlier and stuck counts (and the stuck
  value) and the worst one. The judged readings are the batches' plus
  :data:`CONTEXT_HOURS` of silver before them, so an hourly run sees the start-up it is in
  and a stuck run longer than its own hour.
* **channels**: the share of readings missing a channel the unit carries (null, NaN, out of
  range or unparseable: silver keeps the reading without it), for the worst such channel.
  Fails above 5%; ``details`` counts the missing readings per channel. A channel the unit
  does not carry (``compressors.channels``, from the model catalog) is absent, not missing.
* **sensor_offline**: channels the unit carries that have no value in any of the batches'
  readings taken while it ran (speed above zero; flow above zero when speed itself is
  missing), given at least :data:`OFFLINE_MIN_RUNNING` such readings. ``measured`` is how
  many; any fails: a dead sensor is a notice for the technician, not silence.
* **freshness** (every compressor with a watermark, not only those in the batches, because a
  silent compressor is exactly what it must catch): minutes from its last reading to
  ``as_of`` (default: now), failing above its organization's gateway upload cadence
  (``organizations.upload_cadence_minutes``, hourly by default) plus
  ``freshness_grace_minutes``: between two uploads a healthy unit's last reading is up to a
  cadence old. The last reading is the
  later of its watermark and its latest reading in the batches checked here: the aggregates
  stage advances the watermarks, and this stage must not depend on having run after it (the
  pipeline runs it beside the aggregates stage, see :mod:`etl.pipeline`).

The checks are computed in DuckDB, their ``details`` as JSON text too, and written per
organization in a tenant transaction (:func:`record_checks`), keyed by run id (a retry of the
same run inserts nothing twice). ``last_reading_at`` in the freshness details is written in
UTC (``+00:00``), whatever PostgreSQL's session time zone.
"""

from __future__ import annotations

import collections
import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from altaviz.core.catalog import default_channels
from altaviz.core.db import ETL_ROLE, admin, connect, queries, tenant
from altaviz.core.duck import table_from_arrow
from altaviz.core.errors import InputError
from altaviz.core.silences import window_from_row
from altaviz.core.telemetry import CHANNELS, METRIC_BY_NAME, READINGS_PER_HOUR
from etl.aggregates import set_stage_mark, stage_mark
from etl.lake import Lake
from etl.ledger import dates_between, sql_dates
from etl.metrics import hour_of, q
from etl.models import QualityResult

COMPLETENESS_MAX_MISSING = 0.05
CONSISTENCY_MAX_SHARE = 0.01
#: A healthy unit's worst channel has under 1.5% steady-state outliers (the demo fleet, with
#: load changes, hot spells and suction drift); a spiking or stuck channel far more.
ACCURACY_MAX_SHARE = 0.02
#: Wrong values of one channel before its share counts: fewer are isolated flags.
ACCURACY_MIN_WRONG = 3
#: Readings after a start before values are judged: the simulator's and a real unit's warm-up
#: recovery (about 4 hours at 10-minute readings).
SETTLE_READINGS = 24
#: Identical consecutive values of a channel while running that make it stuck (4 hours); a
#: live transmitter's quantized value repeats for at most about an hour.
STUCK_READINGS = 24
#: Hours of silver before the batches read for the settle and stuck windows.
CONTEXT_HOURS = 5
#: Channels not judged for outliers: speed and flow follow the load the operator sets, and a
#: step in load is operation, not bad data (a stuck value of them still counts).
ACCURACY_EXEMPT = frozenset({"speed_rpm", "flow_mmscfd"})
CHANNELS_MAX_MISSING = 0.05
#: Gateways upload hourly unless their organization says otherwise (``organizations``).
DEFAULT_UPLOAD_CADENCE = 60
#: Readings while running before a channel with no value in any of them counts as offline:
#: half an hour, so one reading lost in transit is not a dead sensor.
OFFLINE_MIN_RUNNING = READINGS_PER_HOUR // 2


def quality_checks(con: duckdb.DuckDBPyConnection, lake: Lake, conn: psycopg.Connection[Any],
                   run_id: str, freshness_grace_minutes: int, as_of: datetime | None = None,
                   db_url: str | None = None) -> QualityResult:
    """Measure and record the four checks for the batches not yet checked; idempotent.

    The checks are computed in DuckDB, their details as JSON text too, and each
    organization's go to PostgreSQL as one CSV COPY (:func:`record_checks`). In the hourly run
    this stage runs beside the aggregates stage, so the ~18,000 checks of a 4,500-unit fleet
    are not built as Python dicts (which would hold the GIL the aggregates' thread needs) nor
    sent as JSON (which PostgreSQL would spend much of the insert parsing);
    bench/bench_etl.py, hour phase, measures the stage.
    """
    as_of = as_of or datetime.now(UTC)
    lo, hi = stage_mark(conn, "quality"), lake.batch_mark("silver")
    con.execute(f"CREATE OR REPLACE TEMP TABLE dq_checks ({CHECK_TABLE})")
    #: per compressor of the batches: readings, quarantined rows, latest reading
    con.execute("CREATE OR REPLACE TEMP TABLE dq_per_comp (org_id VARCHAR, compressor_id "
                "VARCHAR, n BIGINT, bad BIGINT, last TIMESTAMPTZ)")
    if hi > lo:
        _batch_checks(con, lake, lo, hi, as_of, conn)
        _channel_checks(con, lake, conn, lo, hi)
    _freshness(con, conn, as_of, freshness_grace_minutes)
    checks = failed = 0
    orgs = [r[0] for r in con.execute(
        "SELECT DISTINCT org_id FROM dq_checks ORDER BY org_id").fetchall()]
    tables = [(org, con.execute(f"SELECT {', '.join(CHECK_COLUMNS)} FROM dq_checks "
                                "WHERE org_id = ?", [org]).to_arrow_table()) for org in orgs]
    if db_url is not None and len(tables) > 1:
        _record_side_by_side(conn, db_url, run_id, tables)
    else:
        for org, table in tables:
            record_checks(conn, org, run_id, table)
    for _, table in tables:
        checks += table.num_rows
        failed += table.num_rows - int(pc.sum(table.column("passed")).as_py() or 0)
    if hi > lo:
        set_stage_mark(conn, "quality", hi, run_id)
    return QualityResult(checks=checks, failed=failed)


#: DuckDB's table of the run's checks; ``passed`` is ``measured <= threshold``.
CHECK_TABLE = ("org_id VARCHAR, compressor_id VARCHAR, check_type VARCHAR, measured DOUBLE, "
               "threshold DOUBLE, passed BOOLEAN, details VARCHAR")
#: The columns :func:`record_checks` sends, in the order of ``create_quality_stage``.
CHECK_COLUMNS = ("compressor_id", "check_type", "measured", "threshold", "passed", "details")


def _planned_hours(con: duckdb.DuckDBPyConnection, conn: psycopg.Connection[Any],
                   start: datetime, end: datetime) -> None:
    """``dq_planned``: the (organization, compressor, hour) of ``[start, end)`` inside a
    maintenance window of the unit (one-off or recurring in the site's time)."""
    with admin(conn):
        windows = [window_from_row(r) for r in conn.execute(
            queries("silences")["windows_between"], {"start": start, "end": end}).fetchall()]
        units = conn.execute("SELECT org_id, compressor_id, site_id FROM compressors"
                             ).fetchall() if windows else []
    rows: dict[str, list[Any]] = {"org_id": [], "compressor_id": [], "hour": []}
    for org, comp, site in units:
        mine = [w for w in windows if w.org_id == org and w.covers_unit(comp, site)]
        planned: set[datetime] = set()
        for w in mine:
            for b, f in w.spans((start, end)):
                hour = b.replace(minute=0, second=0, microsecond=0)
                while hour < f:
                    planned.add(hour)
                    hour += timedelta(hours=1)
        for hour in sorted(planned):
            rows["org_id"].append(org)
            rows["compressor_id"].append(comp)
            rows["hour"].append(hour)
    table = pa.table({"org_id": pa.array(rows["org_id"], pa.string()),
                      "compressor_id": pa.array(rows["compressor_id"], pa.string()),
                      "hour": pa.array(rows["hour"], pa.timestamp("us", tz="UTC"))})
    table_from_arrow(con, "dq_planned", table)


def _batch_checks(con: duckdb.DuckDBPyConnection, lake: Lake, lo: int, hi: int,
                  as_of: datetime, conn: psycopg.Connection[Any]) -> None:
    """Completeness, consistency and accuracy of silver batches ``lo < batch <= hi`` into
    ``dq_checks``, and ``dq_per_comp``."""
    silver, quarantine = lake.uri("silver"), lake.uri("quarantine")
    s_dates = lake.partitions_for_batches("silver", lo, hi)
    q_dates = lake.partitions_for_batches("quarantine", lo, hi)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dq_batch AS
        SELECT org_id, compressor_id, ts
        FROM delta_scan('{silver}')
        WHERE date IN ({sql_dates(s_dates)}) AND batch_id > {lo} AND batch_id <= {hi}
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dq_quarantine AS
        SELECT org_id, compressor_id, count(*) AS n FROM delta_scan('{quarantine}')
        WHERE arrival_date IN ({sql_dates(q_dates)}) AND batch_id > {lo}
          AND batch_id <= {hi} AND org_id IS NOT NULL
        GROUP BY ALL
    """)
    # contiguous hour ranges per compressor, closed hours only
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dq_hours AS
        WITH r AS (
            SELECT org_id, compressor_id, date_trunc('hour', min(ts)) AS h0,
                   least(date_trunc('hour', max(ts)),
                         '{as_of.isoformat()}'::TIMESTAMPTZ - INTERVAL 1 HOUR) AS h1
            FROM dq_batch GROUP BY ALL
        )
        SELECT org_id, compressor_id, unnest(generate_series(
            h0, date_trunc('hour', h1), INTERVAL 1 HOUR)) AS hour
        FROM r WHERE h1 >= h0
    """)
    first = con.execute("SELECT min(hour), max(hour) FROM dq_hours").fetchone()
    if first and first[0] is not None:
        h_dates = {d[0] for d in con.execute(
            "SELECT DISTINCT strftime(hour, '%Y-%m-%d') FROM dq_hours").fetchall()}
        h_end = first[1] + timedelta(hours=1)
        _planned_hours(con, conn, first[0], h_end)
        over = COMPLETENESS_MAX_MISSING
        con.execute(f"""
            INSERT INTO dq_checks
            WITH counts AS (
                SELECT org_id, compressor_id, {hour_of("ts")} AS hour, count(DISTINCT ts) AS n
                FROM delta_scan('{silver}')
                WHERE date IN ({sql_dates(h_dates)})
                  AND ts >= '{first[0].isoformat()}'::TIMESTAMPTZ
                  AND ts < '{h_end.isoformat()}'::TIMESTAMPTZ
                  AND compressor_id IN (SELECT DISTINCT compressor_id FROM dq_hours)
                GROUP BY ALL
            ), per_hour AS (
                SELECT h.org_id, h.compressor_id, h.hour, p.hour IS NOT NULL AS planned,
                       CASE WHEN p.hour IS NOT NULL THEN 0 ELSE
                       greatest(0, 1 - coalesce(c.n, 0) / {READINGS_PER_HOUR}) END AS missing
                FROM dq_hours h LEFT JOIN counts c USING (org_id, compressor_id, hour)
                LEFT JOIN dq_planned p USING (org_id, compressor_id, hour)
            ), shares AS (
                SELECT org_id, compressor_id, avg(missing) AS share, count(*) AS hours,
                       count(*) FILTER (WHERE planned) AS planned_hours,
                       count(*) FILTER (WHERE missing > {over}) AS flagged,
                       list(strftime(hour, '%Y-%m-%dT%H:00Z') ORDER BY hour)
                           FILTER (WHERE missing > {over}) AS flagged_hours
                FROM per_hour GROUP BY ALL
            )
            SELECT org_id, compressor_id, 'completeness', share, {over}, share <= {over},
                   CASE WHEN planned_hours = 0 THEN
                   json_object('hours', hours, 'hours_flagged', flagged, 'flagged_hours',
                               coalesce(flagged_hours, []::VARCHAR[])[1:24])::VARCHAR
                   ELSE
                   json_object('hours', hours, 'hours_flagged', flagged, 'flagged_hours',
                               coalesce(flagged_hours, []::VARCHAR[])[1:24],
                               'planned_hours', planned_hours)::VARCHAR END
            FROM shares
        """)
    con.execute("""
        INSERT INTO dq_per_comp
        WITH s AS (SELECT org_id, compressor_id, count(*) AS n, max(ts) AS last
                   FROM dq_batch GROUP BY ALL)
        SELECT coalesce(s.org_id, q.org_id), coalesce(s.compressor_id, q.compressor_id),
               coalesce(s.n, 0), coalesce(q.n, 0), s.last
        FROM s FULL JOIN dq_quarantine q USING (org_id, compressor_id)
    """)
    con.execute(f"""
        INSERT INTO dq_checks
        WITH c AS (
            SELECT *, n + bad AS received,
                   CASE WHEN n + bad > 0 THEN bad / (n + bad) ELSE 0.0 END AS bad_share
            FROM dq_per_comp
        )
        SELECT org_id, compressor_id, 'consistency', bad_share, {CONSISTENCY_MAX_SHARE},
               bad_share <= {CONSISTENCY_MAX_SHARE},
               json_object('rows', received, 'quarantined', bad)::VARCHAR
        FROM c
    """)
    _accuracy(con, lake, lo, hi, s_dates)


def _accuracy(con: duckdb.DuckDBPyConnection, lake: Lake, lo: int, hi: int,
              s_dates: set[str]) -> None:
    """The accuracy check of silver batches ``lo < batch <= hi`` into ``dq_checks``: each
    channel's wrong values (steady-state outliers, stuck runs) among the readings taken in
    steady running, the batches' and :data:`CONTEXT_HOURS` of silver before them.

    One query over the readings: the settle and stuck windows are window functions over each
    compressor's readings in time order, so judging them costs no pass beyond the read."""
    bounds = con.execute("SELECT min(ts), max(ts) FROM dq_batch").fetchone()
    if not bounds or bounds[0] is None:
        return
    silver = lake.uri("silver")
    cols = ", ".join(q(c.name) for c in CHANNELS)
    rows = (f"SELECT org_id, compressor_id, ts, outlier_metrics, {cols} "
            f"FROM delta_scan('{silver}') WHERE date IN ({sql_dates(s_dates)}) "
            f"AND batch_id > {lo} AND batch_id <= {hi}")
    if lo > 0:
        first = bounds[0] - timedelta(hours=CONTEXT_HOURS)
        rows += (f" UNION ALL SELECT org_id, compressor_id, ts, outlier_metrics, {cols} "
                 f"FROM delta_scan('{silver}') "
                 f"WHERE date IN ({sql_dates(dates_between(first, bounds[1]))}) "
                 f"AND batch_id <= {lo} AND ts >= '{first.isoformat()}'::TIMESTAMPTZ "
                 f"AND ts < '{bounds[0].isoformat()}'::TIMESTAMPTZ "
                 "AND compressor_id IN (SELECT DISTINCT compressor_id FROM dq_batch)")
    judged = [c.name for c in CHANNELS
              if c.name in METRIC_BY_NAME and c.name not in ACCURACY_EXEMPT]
    # a value that differs from the one before it (or is null, or taken while stopped) ends a
    # stuck run; a run of STUCK_READINGS values has STUCK_READINGS - 1 unchanged ones. A lag
    # and one windowed sum per channel are about three times cheaper than a windowed count,
    # minimum and maximum.
    changed = ", ".join(
        f"({q(c.name)} IS NULL OR NOT running OR {q(c.name)} IS DISTINCT FROM "
        f"lag({q(c.name)}) OVER byts)::INT AS changed_{i}" for i, c in enumerate(CHANNELS))
    stuck = ", ".join(f"sum(changed_{i}) OVER run = 0 AS stuck_{i}"
                      for i in range(len(CHANNELS)))
    counts = ", ".join(
        f"count(*) FILTER (WHERE steady AND {_is_outlier(c.name, judged)}) AS out_{i}, "
        f"count(*) FILTER (WHERE steady AND stuck_{i}) AS stuck_{i}, "
        f"count(*) FILTER (WHERE steady AND ({_is_outlier(c.name, judged)} OR stuck_{i})) "
        f"AS wrong_{i}, max({q(c.name)}) FILTER (WHERE steady AND stuck_{i}) AS value_{i}"
        for i, c in enumerate(CHANNELS))
    long = " UNION ALL ".join(
        f"SELECT org_id, compressor_id, n, judged, '{c.name}' AS channel, out_{i} AS outliers, "
        f"stuck_{i} AS stuck, wrong_{i} AS wrong, value_{i} AS stuck_value FROM per"
        for i, c in enumerate(CHANNELS))
    least = ACCURACY_MIN_WRONG
    con.execute(f"""
        INSERT INTO dq_checks
        WITH r AS (
            SELECT *, coalesce(speed_rpm > 0, flow_mmscfd > 0, false) AS running FROM ({rows})
        ), c AS (
            SELECT *, running AND min(running::INT) OVER settle = 1 AS steady, {changed}
            FROM r
            WINDOW settle AS (PARTITION BY org_id, compressor_id ORDER BY ts
                              ROWS BETWEEN {SETTLE_READINGS} PRECEDING AND 1 FOLLOWING),
                   byts AS (PARTITION BY org_id, compressor_id ORDER BY ts)
        ), w AS (
            SELECT *, {stuck} FROM c
            WINDOW run AS (PARTITION BY org_id, compressor_id ORDER BY ts
                           ROWS BETWEEN {STUCK_READINGS - 2} PRECEDING AND CURRENT ROW)
        ), per AS (
            SELECT org_id, compressor_id, count(*) AS n,
                   count(*) FILTER (WHERE steady) AS judged, {counts}
            FROM w GROUP BY ALL
        ), shares AS (
            SELECT org_id, compressor_id, any_value(n) AS n, any_value(judged) AS judged,
                   coalesce(max(wrong / judged) FILTER (WHERE wrong >= {least}), 0.0) AS worst,
                   arg_max(channel, wrong) FILTER (WHERE wrong >= {least}) AS channel,
                   map_from_entries(list({{'k': channel, 'v': CASE WHEN stuck > 0
                       THEN json_object('outliers', outliers, 'stuck', stuck,
                                        'stuck_value', stuck_value)
                       ELSE json_object('outliers', outliers, 'stuck', stuck) END}}
                       ORDER BY channel) FILTER (WHERE wrong > 0)) AS wrong
            FROM ({long}) l GROUP BY ALL
        )
        SELECT org_id, compressor_id, 'accuracy', worst, {ACCURACY_MAX_SHARE},
               worst <= {ACCURACY_MAX_SHARE},
               json_object('readings', n, 'judged', judged, 'worst_channel', channel,
                           'channels', coalesce(to_json(wrong), '{{}}'::JSON))::VARCHAR
        FROM shares
    """)


def _is_outlier(channel: str, judged: list[str]) -> str:
    """SQL: whether silver flagged ``channel`` as an outlier (false for a channel not
    judged for outliers)."""
    if channel not in judged:
        return "false"
    return f"list_contains(coalesce(outlier_metrics, []), '{channel}')"


def _channel_checks(con: duckdb.DuckDBPyConnection, lake: Lake, conn: psycopg.Connection[Any],
                    lo: int, hi: int) -> None:
    """The channels and sensor-offline checks of silver batches ``lo < batch <= hi`` into
    ``dq_checks``, for the channels each compressor carries."""
    silver = lake.uri("silver")
    s_dates = lake.partitions_for_batches("silver", lo, hi)
    running = "coalesce(speed_rpm > 0, flow_mmscfd > 0, false)"
    counts = ", ".join(
        f"count(*) FILTER (WHERE {q(c.name)} IS NULL) AS miss_{i}, "
        f"count(*) FILTER (WHERE running AND {q(c.name)} IS NULL) AS run_miss_{i}"
        for i, c in enumerate(CHANNELS))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dq_chan AS
        SELECT org_id, compressor_id, count(*) AS n, count(*) FILTER (WHERE running) AS n_run,
               {counts}
        FROM (SELECT *, {running} AS running FROM delta_scan('{silver}')
              WHERE date IN ({sql_dates(s_dates)}) AND batch_id > {lo} AND batch_id <= {hi})
        GROUP BY ALL
    """)
    units = [r[0] for r in con.execute("SELECT DISTINCT compressor_id FROM dq_chan").fetchall()]
    with admin(conn):
        rows = conn.execute(queries("etl")["unit_channels"], {"compressors": units}).fetchall()
    carried = [(org, comp, ch) for org, comp, channels, stages, has_driver in rows
               for ch in (channels if channels is not None
                          else default_channels(stages, has_driver))]
    table_from_arrow(con, "dq_carried", pa.table({
        "org_id": pa.array([r[0] for r in carried], pa.string()),
        "compressor_id": pa.array([r[1] for r in carried], pa.string()),
        "channel": pa.array([r[2] for r in carried], pa.string())}))
    long = " UNION ALL ".join(
        f"SELECT org_id, compressor_id, n, n_run, '{c.name}' AS channel, miss_{i} AS miss, "
        f"run_miss_{i} AS run_miss FROM dq_chan" for i, c in enumerate(CHANNELS))
    over = CHANNELS_MAX_MISSING
    con.execute(f"""
        INSERT INTO dq_checks
        WITH per AS (
            SELECT org_id, compressor_id, any_value(n) AS n, any_value(n_run) AS n_run,
                   max(miss / n) AS worst,
                   map_from_entries(list({{'k': channel, 'v': miss}} ORDER BY channel)
                                    FILTER (WHERE miss > 0)) AS missing,
                   list(channel ORDER BY channel)
                       FILTER (WHERE n_run >= {OFFLINE_MIN_RUNNING} AND run_miss = n_run)
                       AS offline
            FROM ({long}) l JOIN dq_carried USING (org_id, compressor_id, channel)
            GROUP BY ALL
        )
        SELECT org_id, compressor_id, 'channels', worst, {over}, worst <= {over},
               json_object('readings', n,
                           'missing', coalesce(to_json(missing), '{{}}'::JSON))::VARCHAR
        FROM per
        UNION ALL
        SELECT org_id, compressor_id, 'sensor_offline', len(coalesce(offline, [])), 0.0,
               len(coalesce(offline, [])) = 0,
               json_object('running_readings', n_run,
                           'offline', coalesce(offline, []::VARCHAR[]))::VARCHAR
        FROM per
    """)


def _freshness(con: duckdb.DuckDBPyConnection, conn: psycopg.Connection[Any],
               as_of: datetime, grace_minutes: int) -> None:
    """Freshness of every compressor with a watermark or a reading in the batches into
    ``dq_checks``: its last reading is the later of the two, and its limit its
    organization's upload cadence plus ``grace_minutes``."""
    q = queries("etl")
    batch_orgs = [r[0] for r in con.execute(
        "SELECT DISTINCT org_id FROM dq_per_comp WHERE last IS NOT NULL").fetchall()]
    marks: list[tuple[str, str, datetime]] = []
    limits: dict[str, float] = {}
    for org in sorted(set(_orgs(conn)) | set(batch_orgs)):
        with tenant(conn, org, role=ETL_ROLE):
            marks.extend((org, comp, last) for comp, last in
                         conn.execute(q["watermarks_of_org"]).fetchall())
            row = conn.execute(q["upload_cadence_of_org"], {"org_id": org}).fetchone()
            limits[org] = float((row[0] if row else DEFAULT_UPLOAD_CADENCE) + grace_minutes)
    table_from_arrow(con, "dq_limits", pa.table({
        "org_id": pa.array(list(limits), pa.string()),
        "limit_minutes": pa.array(list(limits.values()), pa.float64())}))
    table_from_arrow(con, "dq_marks", pa.table({
        "org_id": pa.array([m[0] for m in marks], pa.string()),
        "compressor_id": pa.array([m[1] for m in marks], pa.string()),
        "last": pa.array([m[2] for m in marks], pa.timestamp("us", tz="UTC"))}))
    as_of_us = (as_of - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    # the reading's time as Python's isoformat() writes a UTC time (microseconds only when
    # there are some), the form the details have always had
    frac = "((epoch_us(last) % 1000000) + 1000000) % 1000000"
    con.execute(f"""
        INSERT INTO dq_checks
        WITH lasts AS (
            SELECT coalesce(m.org_id, b.org_id) AS org_id,
                   coalesce(m.compressor_id, b.compressor_id) AS compressor_id,
                   greatest(coalesce(m.last, b.last), coalesce(b.last, m.last)) AS last
            FROM dq_marks m
            FULL JOIN (SELECT org_id, compressor_id, last FROM dq_per_comp
                       WHERE last IS NOT NULL) b USING (org_id, compressor_id)
        ), f AS (
            SELECT *, greatest(0, ({as_of_us} - epoch_us(last)) / 1000000 / 60) AS minutes
            FROM lasts
        )
        SELECT org_id, compressor_id, 'freshness', minutes, lim, minutes <= lim,
               json_object('last_reading_at', strftime(last, '%Y-%m-%dT%H:%M:%S')
                               || CASE WHEN {frac} = 0 THEN ''
                                       ELSE '.' || lpad(({frac})::VARCHAR, 6, '0') END
                               || '+00:00',
                           'as_of', ?, 'grace_minutes', {int(grace_minutes)})::VARCHAR
        FROM (SELECT f.*, coalesce(l.limit_minutes,
                                   {float(DEFAULT_UPLOAD_CADENCE + grace_minutes)}) AS lim
              FROM f LEFT JOIN dq_limits l USING (org_id))
    """, [as_of.isoformat()])


def record_checks(conn: psycopg.Connection[Any], org: str, run_id: str, checks: pa.Table
                  ) -> int:
    """Record one organization's checks of a run (columns :data:`CHECK_COLUMNS`, ``details``
    as JSON text) in one tenant transaction; returns how many rows were new.

    The rows go as CSV (written by Arrow, off the GIL) through COPY into a temporary table,
    then ``insert_quality_check`` moves those the run has not recorded yet: COPY cannot write
    to a table under row-level security, the INSERT can, and RLS and the ownership check then
    refuse a row of another organization."""
    q = queries("etl")
    data = io.BytesIO()
    csv.write_csv(checks.select(list(CHECK_COLUMNS)), data,
                  csv.WriteOptions(include_header=False))
    with tenant(conn, org, role=ETL_ROLE):
        conn.execute(q["create_quality_stage"])
        with conn.cursor().copy(q["copy_quality_stage"]) as copy:
            copy.write(data.getbuffer())
        return conn.execute(q["insert_quality_check"], {"run_id": run_id}).rowcount


def _record_side_by_side(conn: psycopg.Connection[Any], db_url: str, run_id: str,
                         tables: list[tuple[str, pa.Table]]) -> None:
    """:func:`record_checks` of each organization, on ``conn`` and a second connection at
    once, largest organizations first.

    Inserting the checks is PostgreSQL's work, one backend per connection: one after the
    other, the organizations' inserts would be the end of the hourly run, with the other
    core idle once the aggregates' COPY is done (bench/bench_etl.py, hour phase). Each
    organization is its own tenant transaction; the stage's mark is set only after all of them, so a
    failure anywhere fails the stage and its retry skips the checks already recorded."""
    queue = collections.deque(sorted(tables, key=lambda t: -t[1].num_rows))

    def drain(c: psycopg.Connection[Any]) -> None:
        while True:
            try:
                org, table = queue.popleft()   # atomic: each organization is taken once
            except IndexError:
                return
            record_checks(c, org, run_id, table)

    with connect(db_url) as other, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="etl-dq-record") as pool:
        beside = pool.submit(drain, other)
        try:
            drain(conn)
        finally:
            queue.clear()       # after a failure here, the other connection stops early
            beside.result()


def _orgs(conn: psycopg.Connection[Any]) -> list[str]:
    with admin(conn):
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT org_id FROM etl_watermarks ORDER BY org_id").fetchall()]


#: Rows deleted per transaction by :func:`prune_quality_checks`.
PRUNE_BATCH = 50_000


def prune_quality_checks(conn: psycopg.Connection[Any], keep_days: int,
                         now: datetime | None = None, *, batch: int = PRUNE_BATCH) -> int:
    """Delete data-quality rows older than ``keep_days``, keeping each (organization,
    compressor, check type)'s latest; returns how many were deleted.

    Every hourly run records four checks per compressor (~18,000 rows at 4,500 units, about
    160 million a year), and nothing else ever removes them. ``altaviz dq prune`` calls this.
    ``batch``: rows deleted per transaction.
    """
    if keep_days < 1:
        raise InputError(f"--keep-days must be at least 1, got {keep_days}")
    before = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    deleted = 0
    while True:
        with admin(conn):
            cur = conn.execute(queries("etl")["prune_quality_checks"],
                               {"before": before, "batch": batch})
            n = cur.rowcount
        deleted += n
        if n < batch:
            return deleted
