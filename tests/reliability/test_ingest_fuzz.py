"""Property-based telemetry ingestion: randomly corrupted landing files dropped next to valid
ones. The pipeline must never raise, every row of a readable file must be accounted for
(silver + quarantine + duplicates), every unreadable file must be named in a warning and left
in place, and every valid reading must reach silver and the PostgreSQL aggregates.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altaviz.core import db
from altaviz.core.duck import connect as duck_connect
from altaviz.core.errors import AltavizError
from altaviz.core.settings import Settings
from altaviz.core.telemetry import CHANNELS, LANDING_SCHEMA
from etl.lake import Lake
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, reading, series, write_landing
from tests.reliability.conftest import fresh_fleet_db

DAY = "arrival_date=2025-03-10"
HOSTILE_IDS = ["COMP-9999", "'; DROP TABLE sensor_readings_agg; --", "COMP-0001' OR '1'='1",
               "../../etc/passwd", "COMP\x00-0001", "\u216d\U0001d40eMP-0001", "", " COMP-0001 ",
               "a" * 5000]
BAD_VALUES = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e19, -1.0, 0.0]
BAD_TS = [datetime(1, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
          datetime(2262, 4, 11, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC), None,
          T0 + timedelta(days=3650)]


class Warnings(logging.Handler):
    """Collects warnings of the ETL loggers (caplog is per test, not per example)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def etl_warnings() -> Iterator[Warnings]:
    handler = Warnings()
    logger = logging.getLogger("etl")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# --- corruptions: each writes one file into the landing day folder ---------------------------
# A corruption returns ("rows", n) for a readable file with n rows or ("unreadable", 0).

Corrupt = Callable[[Path, str, st.DataObject], tuple[str, int]]


def _valid_bytes(rows: list[dict[str, Any]]) -> bytes:
    tmp = Path(tempfile.mkdtemp())
    try:
        return write_landing(tmp, rows, T0 + timedelta(hours=2)).read_bytes()
    finally:
        shutil.rmtree(tmp)


def _write(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def _cols(rows: list[dict[str, Any]], arrived: datetime) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {f.name: [] for f in LANDING_SCHEMA}
    for r in rows:
        for f in LANDING_SCHEMA:
            cols[f.name].append(arrived if f.name == "arrived_at" else r.get(f.name))
    return cols


def _typed(cols: dict[str, list[Any]]) -> pa.Table:
    return pa.table({k: pa.array(v, type=LANDING_SCHEMA.field(k).type) for k, v in cols.items()})


ARRIVED = T0 + timedelta(hours=3, minutes=5)


def truncated(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    raw = _valid_bytes(series("COMP-0002", T0, 1))
    path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")])
    return "unreadable", 0


def footer_garbage(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    raw = bytearray(_valid_bytes(series("COMP-0002", T0, 1)))
    start = data.draw(st.integers(len(raw) - 200, len(raw) - 9), label="flip_at")
    for i in range(start, start + 4):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    return "maybe", 0


def empty(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    path.write_bytes(data.draw(st.sampled_from([b"", b"PAR1", b"not parquet\n", b"PAR1PAR1"]),
                               label="bytes"))
    return "unreadable", 0


def zero_rows(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    _write(path, LANDING_SCHEMA.empty_table())
    return "rows", 0


def text_garbage(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    n = data.draw(st.integers(1, 4), label="n")
    junk = st.one_of(st.none(), st.text(max_size=12),
                     st.sampled_from(["NaN", "inf", "-inf", "1e400", "12,5", " 7 ", "0x1F"]))
    cols: dict[str, list[Any]] = {"compressor_id": ["COMP-0004"] * n,
                                  "ts": [(T0 + timedelta(minutes=10 * i)).isoformat()
                                         for i in range(n)],
                                  "arrived_at": [ARRIVED.isoformat()] * n}
    for c in CHANNELS:
        cols[c.name] = [data.draw(junk, label=c.name) for _ in range(n)]
    _write(path, pa.table({k: pa.array(v, type=pa.string()) for k, v in cols.items()}))
    return "rows", n


def bad_values(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    n = data.draw(st.integers(1, 4), label="n")
    rows = [reading("COMP-0002", T0 + timedelta(minutes=10 * i),
                    **{data.draw(st.sampled_from([c.name for c in CHANNELS]), label="ch"):
                       data.draw(st.sampled_from(BAD_VALUES), label="v")}) for i in range(n)]
    _write(path, _typed(_cols(rows, ARRIVED)))
    return "rows", n


def unknown_ids(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    ids = data.draw(st.lists(st.sampled_from(HOSTILE_IDS), min_size=1, max_size=3), label="ids")
    rows = [reading(cid, T0 + timedelta(minutes=10 * i)) for i, cid in enumerate(ids)]
    _write(path, _typed(_cols(rows, ARRIVED)))
    return "rows", len(rows)


def bad_timestamps(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    tss = data.draw(st.lists(st.sampled_from(BAD_TS), min_size=1, max_size=3), label="ts")
    rows = [reading("COMP-0004", ts) for ts in tss]  # type: ignore[arg-type]
    _write(path, _typed(_cols(rows, ARRIVED)))
    return "rows", len(rows)


def extra_and_missing_columns(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    rows = [reading("COMP-0002", T0 + timedelta(hours=5, minutes=10 * i)) for i in range(3)]
    cols = _cols(rows, ARRIVED)
    drop = data.draw(st.lists(st.sampled_from([c.name for c in CHANNELS] + ["arrived_at"]),
                              max_size=4, unique=True), label="drop")
    table = _typed(cols).drop_columns(drop)
    for name in data.draw(st.lists(st.sampled_from(["extra", "Oil_Temp_F", "org_id", "x y"]),
                                   max_size=2, unique=True), label="extra"):
        table = table.append_column(name, pa.array([1.5] * len(rows)))
    _write(path, table)
    return "rows", len(rows)


def loose_types(path: Path, _: str, data: st.DataObject) -> tuple[str, int]:
    """Types that cast cleanly: int compressor ids, naive timestamps, int/float32 channels."""
    n = 2
    _write(path, pa.table({
        "compressor_id": pa.array([2, 4], pa.int64()),
        "ts": pa.array([datetime(2025, 3, 10, 7), datetime(2025, 3, 10, 7, 10)]),
        "oil_temp_f": pa.array([170, 171], pa.int32()),
        "speed_rpm": pa.array([1200.0, 1201.0], pa.float32())}))
    return "rows", n


CORRUPTIONS: list[Corrupt] = [truncated, footer_garbage, empty, zero_rows, text_garbage,
                              bad_values, unknown_ids, bad_timestamps,
                              extra_and_missing_columns, loose_types]

# Valid files: one hour of COMP-0001 (acme) or COMP-0003 (bravo), each reading with its own
# oil temperature so that every valid reading can be found again in silver.
VALID = [("COMP-0001", 0), ("COMP-0001", 1), ("COMP-0003", 0), ("COMP-0003", 2)]


def _write_valid(landing: Path, k: int) -> dict[tuple[str, datetime], float]:
    cid, hour = VALID[k]
    rows = series(cid, T0 + timedelta(hours=hour), 1)
    for j, r in enumerate(rows):
        r["oil_temp_f"] = 160.0 + k + j / 10
    write_landing(landing, rows, T0 + timedelta(hours=hour + 1, minutes=5), org=f"v{k}")
    return {(r["compressor_id"], r["ts"]): r["oil_temp_f"] for r in rows}


def _silver(settings: Settings) -> dict[tuple[str, datetime], float]:
    con, lake = duck_connect(), Lake(settings.lake_path)
    try:
        rows = con.execute(f"SELECT compressor_id, ts, oil_temp_f "
                           f"FROM delta_scan('{lake.uri('silver')}')").fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2] for r in rows}


def _lake_counts(settings: Settings) -> tuple[int, int, int]:
    con, lake = duck_connect(), Lake(settings.lake_path)
    try:
        b, s, q = (con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri(t)}')").fetchall()[0][0]
                   for t in ("bronze", "silver", "quarantine"))
    finally:
        con.close()
    return int(b), int(s), int(q)


def _agg_hours(url: str) -> set[tuple[str, datetime]]:
    with db.connect(url) as conn, conn.transaction():
        rows = conn.execute("SELECT compressor_id, hour FROM sensor_readings_agg "
                            "WHERE metric = 'oil_temp_f'").fetchall()
    return {(r[0], r[1]) for r in rows}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(corruptions=st.lists(st.sampled_from(CORRUPTIONS), min_size=1, max_size=4),
       valid=st.lists(st.integers(0, len(VALID) - 1), min_size=1, max_size=3, unique=True),
       data=st.data())
def test_corrupted_landing_files_never_crash_nor_lose_valid_readings(
        corruptions: list[Corrupt], valid: list[int], data: st.DataObject,
        pg_server: Any, pg_template: str) -> None:
    url = fresh_fleet_db(pg_server, pg_template)
    root = Path(tempfile.mkdtemp(prefix="ingest-fuzz-"))
    try:
        cfg = Settings(data_dir=root, landing_dir=root / "landing", lake_dir=root / "lake",
                       late_arrival_minutes=240)
        expected: dict[tuple[str, datetime], float] = {}
        for k in valid:
            expected |= _write_valid(cfg.landing_path, k)
        day = cfg.landing_path / DAY
        day.mkdir(parents=True, exist_ok=True)
        readable_rows, unreadable, maybe = len(expected), [], []
        for i, corrupt in enumerate(corruptions):
            name = f"20250310T{10 + i:02d}0000-fuzz-{corrupt.__name__}.parquet"
            kind, n = corrupt(day / name, name, data)
            if kind == "rows":
                readable_rows += n
            elif kind == "unreadable":
                unreadable.append(name)
            else:
                maybe.append(name)

        with etl_warnings() as warned:
            summary = run_pipeline(cfg, url)   # must not raise

        # every unreadable file is named in a warning and left in place for inspection
        for name in unreadable:
            assert any(name in m and "unreadable" in m for m in warned.messages), warned.messages
            assert (day / name).exists()
        skipped = sum(any(n in m for m in warned.messages) for n in maybe)
        assert summary.files == len(valid) + len(corruptions) - len(unreadable) - skipped
        # every row of every readable file is accounted for
        bronze, silver, quarantine = _lake_counts(cfg)
        if not maybe:
            assert bronze == readable_rows
        assert summary.rows_in == bronze
        assert bronze == silver + quarantine + summary.duplicates
        assert sum(summary.quarantined.values()) == quarantine
        # and every valid reading reached silver (with its value) and the aggregates
        got = _silver(cfg)
        assert {k: got.get(k) for k in expected} == expected
        hours = {(cid, ts.replace(minute=0)) for cid, ts in expected}
        assert hours <= _agg_hours(url)
        # the database survived hostile compressor ids (quarantined, never executed)
        with db.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('sensor_readings_agg')").fetchone() \
                == ("sensor_readings_agg",)
        # a second run loads nothing new and still does not raise
        with etl_warnings():
            again = run_pipeline(cfg, url)
        assert again.rows_in == 0 and _lake_counts(cfg)[0] == bronze
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- file names that try quoting, traversal or shell tricks ---------------------------------

HOSTILE_NAMES = [
    "20250310T010000-o'brien.parquet",
    '20250310T010001-say "hi".parquet',
    "20250310T010002-..parquet",
    "20250310T010003-..%2F..%2Fetc%2Fpasswd.parquet",
    "20250310T010004-a'); DROP TABLE bronze; --.parquet",
    "20250310T010005-$(touch PWNED).parquet",
    "20250310T010006-`id` ; rm -rf x.parquet",
    "20250310T010007-ünïcødé 空白.parquet",
    "20250310T010008-back\\slash.parquet",
    "..20250310T010009.parquet",
]


def test_hostile_file_names_load_once_with_their_exact_names(
        tmp_path: Path, db_url: str, fleet: Any, conn: psycopg.Connection[Any]) -> None:
    cfg = Settings(data_dir=tmp_path, landing_dir=tmp_path / "landing",
                   lake_dir=tmp_path / "lake", late_arrival_minutes=240)
    day = cfg.landing_path / DAY
    day.mkdir(parents=True)
    expected: dict[str, int] = {}
    for i, name in enumerate(HOSTILE_NAMES):
        rows = [reading("COMP-0001", T0 + timedelta(hours=i, minutes=10 * j)) for j in range(3)]
        _write(day / name, _typed(_cols(rows, T0 + timedelta(hours=i + 1))))
        expected[f"{DAY}/{name}"] = 3
    # a folder that tries SQL in its partition value and one outside the contract: ignored
    (cfg.landing_path / "arrival_date=2025-03-10'; DROP TABLE x; --").mkdir()
    _write(cfg.landing_path / "arrival_date=2025-03-10'; DROP TABLE x; --" / "a.parquet",
           _typed(_cols([reading("COMP-0001", T0)], T0)))
    outside = tmp_path / "outside.parquet"
    _write(outside, _typed(_cols([reading("COMP-0002", T0)], T0)))
    (day / "20250310T020000-link-outside.parquet").symlink_to(outside)
    expected[f"{DAY}/20250310T020000-link-outside.parquet"] = 1

    summary = run_pipeline(cfg, db_url)
    assert summary.files == len(expected)
    con, lake = duck_connect(), Lake(cfg.lake_path)
    got = dict(con.execute(f"SELECT source_file, count(*) FROM delta_scan('{lake.uri('bronze')}')"
                           " GROUP BY 1").fetchall())
    assert got == expected
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    # the ledger matches quoted names exactly: nothing is loaded twice
    assert run_pipeline(cfg, db_url).files == 0
    assert sum(dict(con.execute(
        f"SELECT source_file, count(*) FROM delta_scan('{lake.uri('bronze')}') GROUP BY 1"
    ).fetchall()).values()) == sum(expected.values())
    with conn.transaction():
        assert conn.execute("SELECT count(*) FROM sensor_readings_agg").fetchall()[0][0] > 0


# --- known crashes: one file of an incompatible type blocks every valid file ----------------

def _incompatible(kind: str) -> pa.Table:
    if kind == "ts_int":
        return pa.table({"compressor_id": ["COMP-0002"], "ts": pa.array([1741564800], pa.int64()),
                         "oil_temp_f": [170.0]})
    if kind == "channel_timestamp":
        return pa.table({"compressor_id": ["COMP-0002"], "ts": [T0],
                         "oil_temp_f": pa.array([T0])})
    return pa.table({"compressor_id": ["COMP-0002"], "ts": [T0],
                     "oil_temp_f": pa.array([[170.0]])})


def _corrupt_page(path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    write_landing(tmp, series("COMP-0002", T0, 1), ARRIVED)
    src = next(tmp.rglob("*.parquet"))
    raw = bytearray(src.read_bytes())
    start = pq.read_metadata(src).row_group(0).column(0).data_page_offset
    for i in range(start, start + 6):  # page header garbage, footer intact
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    shutil.rmtree(tmp)


@pytest.mark.parametrize("kind", ["ts_int", "channel_timestamp", "channel_list",
                                  "corrupt_page"])
def test_one_incompatible_file_does_not_block_valid_files(
        kind: str, tmp_path: Path, db_url: str, fleet: Any) -> None:
    cfg = Settings(data_dir=tmp_path, landing_dir=tmp_path / "landing",
                   lake_dir=tmp_path / "lake", late_arrival_minutes=240)
    expected = _write_valid(cfg.landing_path, 0)
    day = cfg.landing_path / DAY
    name = f"20250310T120000-bad-{kind}.parquet"
    if kind == "corrupt_page":
        _corrupt_page(day / name)
    else:
        _write(day / name, _incompatible(kind))
    try:
        run_pipeline(cfg, db_url)
    except AltavizError as exc:  # acceptable only if it names the file ...
        assert name in str(exc)
        run_pipeline(cfg, db_url)  # ... and a later run still loads the valid files
    got = _silver(cfg)
    assert {k: got.get(k) for k in expected} == expected
