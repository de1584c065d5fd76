"""Silver's handed partials (etl/handoff.py): the gold of a bulk load, and of the hourly run,
built from them equals gold built by reading silver again, outlier and late counts included;
they are used only for the exact batches they were written for, and removed once gold has
run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from altaviz.core.settings import Settings
from etl.handoff import FLAGS_SCHEMA, SUMS_SCHEMA, FlagTally, Handoff
from etl.pipeline import run_pipeline
from etl.thresholds import DEFAULT_THRESHOLDS, Thresholds
from tests.etl.landing import T0, reading, write_landing

COMPRESSORS = ("COMP-0001", "COMP-0002", "COMP-0003", "COMP-0004")
#: Every bulk path: trailing baselines and windows on the hour grid, no hot cache (a first
#: load of a small fleet would otherwise take the join paths, which hand nothing over).
BULK = Thresholds(join_max_hours=0, hot_hours=0)


def _landing(landing: Path) -> None:
    """30 hours of four compressors (hour 5 missing), an outlier (COMP-0002, hour 20) and
    readings of hours 0-2 that arrive a day late (late rows), all in one bulk load."""
    for k in range(3, 30):
        if k == 5:
            continue
        rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i),
                        oil_temp_f=280.0 if (c, k, i) == ("COMP-0002", 20, 3)
                        else 150.0 + k % 7 + i + 7 * n)
                for n, c in enumerate(COMPRESSORS) for i in range(6)]
        write_landing(landing, rows, T0 + timedelta(hours=k + 1, minutes=5))
    early = [reading(c, T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=150.0 + k + i)
             for c in COMPRESSORS[:2] for k in range(3) for i in range(6)]
    write_landing(landing, early, T0 + timedelta(days=1, hours=6))


def _gold(lake: Path) -> list[dict[str, Any]]:
    table = DeltaTable(str(lake / "gold")).to_pyarrow_table()
    rows: list[dict[str, Any]] = table.drop_columns(["batch_id"]).to_pylist()
    return sorted(rows, key=lambda r: (r["compressor_id"], r["metric"], r["hour"]))


def _next_hour(landing: Path) -> None:
    """Hour 30 of the four compressors, as the hourly run gets it: an outlier (COMP-0002) and
    COMP-0003's readings arriving a day late (late rows)."""
    rows = [reading(c, T0 + timedelta(hours=30, minutes=10 * i),
                    oil_temp_f=280.0 if (c, i) == ("COMP-0002", 3) else 152.0 + i + 7 * n)
            for n, c in enumerate(COMPRESSORS) if c != "COMP-0003" for i in range(6)]
    write_landing(landing, rows, T0 + timedelta(hours=31, minutes=5))
    write_landing(landing, [reading("COMP-0003", T0 + timedelta(hours=30, minutes=10 * i),
                                    oil_temp_f=166.0 + i) for i in range(6)],
                  T0 + timedelta(days=2, hours=6))


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of gold's reads of handed partials (once per bucket)."""
    import etl.handoff

    reads = [0]
    original = etl.handoff.Handoff.partials

    def counted(self: Handoff, *args: Any) -> pa.Table:
        reads[0] += 1
        return original(self, *args)

    monkeypatch.setattr(etl.handoff.Handoff, "partials", counted)
    return reads


def _discard_after_silver(settings: Settings) -> Callable[[str], None]:
    """An ``after_stage`` hook removing silver's handed partials, as a run that stopped
    between silver and gold leaves them unusable: gold then reads silver."""
    def hook(stage: str) -> None:
        if stage == "silver":
            Handoff(settings.lake_path).discard()
    return hook


def _run(settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch, *,
         discard: bool = False) -> tuple[list[dict[str, Any]], int]:
    """A bulk load (:data:`BULK`); gold's rows and how often gold read handed partials (once
    per bucket). ``discard``: silver's handed partials are removed before gold runs."""
    reads = _count_reads(monkeypatch)
    _landing(settings.landing_path)
    summary = run_pipeline(settings, db_url, thresholds=BULK,
                           after_stage=_discard_after_silver(settings) if discard else None)
    assert summary.rows_late == 36 and summary.rows_in == 4 * 26 * 6 + 36
    monkeypatch.undo()
    return _gold(settings.lake_path), reads[0]


def _second_lake(settings: Settings, tmp_path: Path, pg_server: Any) -> tuple[Settings, str]:
    """Another lake and landing folder with a fresh database holding the same fleet, for the
    run to compare with."""
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import _fresh_database, two_tenant_fleet

    other = settings.model_copy(update={"lake_dir": tmp_path / "lake2",
                                        "landing_dir": tmp_path / "landing2"})
    url = _fresh_database(pg_server, "altaviz_test_template")
    with psycopg.connect(url) as c:
        load_fleet(c, two_tenant_fleet())
    return other, url


@pytest.mark.parametrize("buckets", [1, 3])
def test_handed_partials_give_the_gold_of_silver_read_again(
        settings: Settings, db_url: str, fleet: Any, tmp_path: Path, pg_server: Any,
        monkeypatch: pytest.MonkeyPatch, buckets: int) -> None:
    """In one bucket of compressors, or three (each reads its own compressors' rows)."""
    dirty_hours = 4 * 26 + 2 * 3
    bucketed = settings.model_copy(update={"etl_bucket_hours": -(-dirty_hours // buckets)})
    handed, reads = _run(bucketed, db_url, monkeypatch)
    assert reads == buckets, "the bulk load did not take silver's handed partials"
    assert not (settings.lake_path / "_handoff").exists(), "gold left the handed files"

    other, url = _second_lake(settings, tmp_path, pg_server)
    read, reads = _run(other, url, monkeypatch, discard=True)
    assert reads == 0

    _assert_same_gold(handed, read)
    # the data exercised the handed flag counts: the outlier's hour, the late hours
    oil = _oil(handed)
    assert oil[("COMP-0002", 20)]["outliers"] == 1
    assert [oil[(c, k)]["late"] for c in COMPRESSORS[:2] for k in range(3)] == [6] * 6
    assert sum(r["late"] for r in handed) == sum(r["late"] for r in read) > 0


def _assert_same_gold(handed: list[dict[str, Any]], read: list[dict[str, Any]]) -> None:
    """The same rows: keys, counts, minimum, maximum and flags exactly, sums to 1e-9."""
    assert len(handed) == len(read) > 0
    exact = ("org_id", "compressor_id", "metric", "hour", "n", "min", "max", "outliers",
             "late", "flags", "date", "min_4h", "max_4h", "min_24h", "max_24h")
    for a, b in zip(handed, read, strict=True):
        assert {k: a[k] for k in exact} == {k: b[k] for k in exact}
        for k in set(a) - set(exact):
            # the same readings summed in another order
            assert (a[k] is None) == (b[k] is None), (k, a, b)
            if a[k] is not None:
                assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), (k, a, b)


#: Silver's flag columns, with each reading's key.
FLAG_COLUMNS = ("compressor_id", "ts", "late", "outlier_metrics")


def _silver_rows(lake: Path, columns: tuple[str, ...] = FLAG_COLUMNS) -> list[tuple[Any, ...]]:
    """Every silver reading's ``columns``, as sorted tuples."""
    rows = DeltaTable(str(lake / "silver")).to_pyarrow_table(columns=list(columns)).to_pylist()
    return sorted(tuple(r[c] for c in columns) for r in rows)


def _oil(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The oil temperature rows by (compressor, hours since T0)."""
    return {(r["compressor_id"], int((r["hour"] - T0) / timedelta(hours=1))): r
            for r in rows if r["metric"] == "oil_temp_f"}


def _hourly(settings: Settings, db_url: str, thresholds: Thresholds,
            monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], int]:
    """A first load (default paths), then the next hour's run with ``thresholds``; gold's
    rows and how often the hourly run's gold read handed partials."""
    _landing(settings.landing_path)
    run_pipeline(settings, db_url)
    reads = _count_reads(monkeypatch)
    _next_hour(settings.landing_path)
    summary = run_pipeline(settings, db_url, thresholds=thresholds)
    assert summary.rows_late == 6 and summary.rows_in == 4 * 6
    monkeypatch.undo()
    return _gold(settings.lake_path), reads[0]


def test_the_hourly_runs_handed_partials_give_the_gold_of_silver_read_again(
        settings: Settings, db_url: str, fleet: Any, tmp_path: Path, pg_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The next hour's batch: silver's baselines joined to the hot cache, gold's windows on
    it; silver hands that batch's partials over too."""
    handed, reads = _hourly(settings, db_url, DEFAULT_THRESHOLDS, monkeypatch)
    assert reads == 1, "the hourly run did not take silver's handed partials"
    assert not (settings.lake_path / "_handoff").exists(), "gold left the handed files"

    other, url = _second_lake(settings, tmp_path, pg_server)
    # the other lake's hourly run as for a large batch without the hot cache: bronze read by
    # each query, partials grouped by DuckDB, baselines joined to gold's long rows, readings
    # flagged by DuckDB, nothing handed over, gold reading silver
    read, reads = _hourly(other, url, Thresholds(hot_hours=0, small_batch_rows=0), monkeypatch)
    assert reads == 0
    _assert_same_gold(handed, read)
    # silver's own flags too: compared in numpy on the handed path, in SQL on the other
    flags = _silver_rows(settings.lake_path)
    assert flags == _silver_rows(other.lake_path)
    assert [f for f in flags if f[3] and f[1] >= T0 + timedelta(hours=30)] == [
        ("COMP-0002", T0 + timedelta(hours=30, minutes=30), False, ["oil_temp_f"])]
    oil = _oil(handed)
    assert oil[("COMP-0002", 30)]["outliers"] == 1 and oil[("COMP-0002", 30)]["late"] == 0
    assert oil[("COMP-0003", 30)]["late"] == 6 and oil[("COMP-0003", 30)]["outliers"] == 0
    assert oil[("COMP-0002", 30)]["max"] == 280.0 and oil[("COMP-0001", 30)]["min"] == 152.0


def test_handed_partials_serve_only_their_own_batches(tmp_path: Path) -> None:
    import numpy as np

    from altaviz.core.telemetry import METRICS

    handoff = Handoff(tmp_path)
    sums: dict[str, list[Any]] = {f.name: [None] for f in SUMS_SCHEMA}
    sums.update(org_id=["acme"], compressor_id=["C1"], hour=[T0], pos=[7], n_0=[2], s_0=[3.0],
                q_0=[5.0])
    cells = handoff.write_sums(pa.table(sums).to_reader())
    assert cells.tolist() == [7]
    assert not handoff.usable(0, 3), "no record before silver's commit"
    lo = np.full((len(METRICS), 1), np.inf)
    hi = np.full((len(METRICS), 1), -np.inf)
    lo[0, 0], hi[0, 0] = 1.0, 2.0
    handoff.commit(lo, hi, FLAGS_SCHEMA.empty_table(), 0, 3)
    assert handoff.usable(0, 3)
    row = handoff.partials().to_pylist()[0]
    assert (row["n_0"], row["s_0"], row["lo_0"], row["hi_0"]) == (2, 3.0, 1.0, 2.0)
    assert row["lo_1"] is None and row["hi_1"] is None and "pos" not in row
    # another range: a run that stopped between silver and gold, batches silver wrote twice
    assert not handoff.usable(0, 4) and not handoff.usable(1, 3)
    handoff.discard()
    assert not handoff.usable(0, 3) and not (tmp_path / "_handoff").exists()


def test_flag_tally_counts_per_compressor_hour_and_metric() -> None:
    import numpy as np

    from altaviz.core.telemetry import METRICS

    ts = [T0 + timedelta(minutes=10 * i) for i in range(7)]          # 6 in hour 0, 1 in hour 1
    values: dict[str, list[float | None]] = {f"m_{i}": [1.0] * 7 for i in range(len(METRICS))}
    values["m_5"][2] = None                                          # late, but no value
    batch = pa.RecordBatch.from_pydict({
        "org_id": ["acme"] * 7, "compressor_id": ["C1"] * 7, "ts": ts,
        "late": [True, False, True, False, False, False, True], **values})
    outliers = np.zeros((7, len(METRICS)), dtype=bool)
    outliers[1, 2] = outliers[3, 2] = outliers[6, 0] = True
    tally = FlagTally()
    tally.add(batch, outliers)
    rows = {(r["hour"], r["compressor_id"]): r for r in tally.table().to_pylist()}
    h0, h1 = rows[(T0, "C1")], rows[(T0 + timedelta(hours=1), "C1")]
    assert h0["o_2"] == 2 and h0["o_0"] == 0 and h0["l_0"] == 2 and h0["l_5"] == 1
    assert h1["o_0"] == 1 and h1["l_0"] == 1 and h1["o_2"] == 0
    assert FlagTally().table().num_rows == 0


def test_partials_that_cannot_be_written_leave_gold_reading_silver(
        settings: Settings, db_url: str, fleet: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The handoff is a shortcut: a silver that cannot write it (here a file where its folder
    goes; a full disk alike) warns and goes on, and gold reads silver."""
    settings.lake_path.mkdir(parents=True, exist_ok=True)
    (settings.lake_path / "_handoff").write_text("in the way")
    rows, reads = _run(settings, db_url, monkeypatch)
    assert reads == 0
    assert "cannot write the partials for gold" in caplog.text
    oil = _oil(rows)
    assert len(oil) == 4 * 26 + 2 * 3 and oil[("COMP-0002", 20)]["outliers"] == 1


def test_handed_partials_missing_an_hour_stop_gold_with_a_clear_error(
        settings: Settings, db_url: str, fleet: Any) -> None:
    """Handed sums that lack one of the batch's compressor-hours (a damaged file) must not
    lose that hour: gold refuses them, naming the folder to remove, and writes nothing."""

    def damage(stage: str) -> None:
        if stage != "silver":
            return
        for name in ("sums.arrow", "extremes.arrow"):     # the same row gone from both
            path = settings.lake_path / "_handoff" / name
            with pa.OSFile(str(path)) as source:        # into memory: the file is rewritten
                table = pa.ipc.open_file(source).read_all()
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table.slice(1).combine_chunks())

    _landing(settings.landing_path)
    with pytest.raises(Exception, match=r"do not match the silver batches' hours.*_handoff"):
        run_pipeline(settings, db_url, after_stage=damage, thresholds=BULK)
    assert DeltaTable(str(settings.lake_path / "gold")).to_pyarrow_table().num_rows == 0
