"""Landing file names are matched literally: a name DuckDB would read as a glob pattern loads
only its own file, once, under its own name."""

from __future__ import annotations

from datetime import timedelta

import pytest

from altaviz.core.duck import connect as duck_connect
from altaviz.core.settings import Settings
from etl.bronze import bronze_ingest
from etl.lake import Lake
from tests.etl.landing import T0, series, write_landing


@pytest.mark.parametrize("name", ["*.parquet", "[ab]?{x,y}*.parquet"])
def test_a_glob_named_file_loads_only_itself_once(settings: Settings, name: str) -> None:
    lake = Lake(settings.lake_path)
    lake.ensure()
    con = duck_connect()
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=4)
    for i in range(3):
        write_landing(landing, series(f"COMP-000{i + 1}", T0 + timedelta(hours=i), 1), arrive)
    first = bronze_ingest(con, lake, landing)
    assert (first.files, first.rows) == (3, 18)

    # the gateway's next file, written under a name that is a pattern matching the others
    sent = write_landing(landing, series("COMP-0009", T0, 2), arrive + timedelta(minutes=5))
    target = sent.with_name(name)
    sent.rename(target)
    second = bronze_ingest(con, lake, landing)
    assert (second.files, second.rows) == (1, 12)

    rows = con.execute(
        f"SELECT batch_id, source_file, compressor_id, count(*), min(source_row), "
        f"max(source_row) FROM delta_scan('{lake.uri('bronze')}') WHERE batch_id = 2 "
        f"GROUP BY ALL").fetchall()
    assert rows == [(2, f"{target.parent.name}/{name}", "COMP-0009", 12, 0, 11)]
    total = con.execute(
        f"SELECT count(*) FROM delta_scan('{lake.uri('bronze')}')").fetchone()
    assert total == (30,)
    # and a re-run finds it loaded
    assert bronze_ingest(con, lake, landing).files == 0
