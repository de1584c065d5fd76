"""The ledger's index of bronze's files: trusted only with its proof (same table, a mark not
past bronze's), always completed from bronze's later batches, and never the reason a file is
loaded twice or never."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from altaviz.core.duck import connect as duck_connect
from altaviz.core.settings import Settings
from etl.bronze import bronze_ingest
from etl.lake import Lake
from etl.ledger import INDEX_FILE, discover, pending
from tests.etl.landing import T0, series, write_landing


def _lake(settings: Settings) -> tuple[duckdb.DuckDBPyConnection, Lake]:
    lake = Lake(settings.lake_path)
    lake.ensure()
    return duck_connect(), lake


def _in_bronze(con: duckdb.DuckDBPyConnection, lake: Lake) -> set[str]:
    return {r[0] for r in con.execute(
        f"SELECT DISTINCT source_file FROM delta_scan('{lake.uri('bronze')}')").fetchall()}


def _index(lake: Lake) -> tuple[set[str], dict[bytes, bytes]]:
    table = pq.read_table(lake.root / INDEX_FILE)
    return set(table.column("source_file").to_pylist()), dict(table.schema.metadata or {})


def _forge(lake: Lake, files: list[str], table_id: str, mark: int) -> None:
    """An index listing ``files`` (as if loaded), under the given proof."""
    rows = pa.table({"source_file": files,
                     "arrival_date": [f.split("/")[0].split("=")[1] for f in files]})
    (lake.root / INDEX_FILE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows.replace_schema_metadata(
        {b"table_id": table_id.encode(), b"mark": str(mark).encode()}), lake.root / INDEX_FILE)


def _write(landing: Path, n: int) -> str:
    path = write_landing(landing, series("COMP-0001", T0 + timedelta(hours=n), 1),
                         T0 + timedelta(hours=n, minutes=5))
    return f"{path.parent.name}/{path.name}"


def _one_loaded(settings: Settings) -> tuple[duckdb.DuckDBPyConnection, Lake, Path, str, str,
                                             str]:
    """A lake whose bronze holds one landing file (batch 1) and a second file waiting:
    ``(con, lake, landing, loaded, new, bronze's table id)``."""
    con, lake = _lake(settings)
    landing = settings.landing_path
    loaded = _write(landing, 0)
    bronze_ingest(con, lake, landing)
    new = _write(landing, 1)
    return con, lake, landing, loaded, new, str(lake.table("bronze").metadata().id)


def test_the_index_follows_bronze_batch_by_batch(settings: Settings) -> None:
    con, lake = _lake(settings)
    landing = settings.landing_path
    first = _write(landing, 0)
    assert [f.source_file for f in pending(con, lake, landing)] == [first]
    bronze_ingest(con, lake, landing)
    # a crash right after bronze's commit: the next lookup has an index one batch behind
    assert pending(con, lake, landing) == []
    names, meta = _index(lake)
    assert names == {first} and meta[b"mark"] == b"1"
    assert meta[b"table_id"] == str(lake.table("bronze").metadata().id).encode()
    second = _write(landing, 1)
    bronze_ingest(con, lake, landing)       # lists the pending files itself
    third = _write(landing, 2)
    # batch 2 is read from bronze (after the index's mark), the index moves to mark 2
    assert [f.source_file for f in pending(con, lake, landing)] == [third]
    names, meta = _index(lake)
    assert names == {first, second} == _in_bronze(con, lake) and meta[b"mark"] == b"2"
    bronze_ingest(con, lake, landing)
    assert pending(con, lake, landing) == []
    assert _index(lake)[0] == {first, second, third} == _in_bronze(con, lake)


def test_a_trusted_index_answers_for_the_batches_it_covers(settings: Settings) -> None:
    """The index is what the lookup reads up to its mark: a file it lists counts as loaded
    (this is why it must be exact, and why every other test here checks its proof)."""
    con, lake, landing, loaded, listed, table_id = _one_loaded(settings)
    _forge(lake, [loaded, listed], table_id, mark=1)
    assert pending(con, lake, landing) == []


@pytest.mark.parametrize("proof", ["later_mark", "other_table", "no_metadata", "garbage"])
def test_an_index_without_its_proof_is_ignored_and_rebuilt(settings: Settings,
                                                            proof: str) -> None:
    con, lake, landing, loaded, new, table_id = _one_loaded(settings)
    path = lake.root / INDEX_FILE
    if proof == "later_mark":        # bronze restored to an earlier version than the index's
        _forge(lake, [loaded, new], table_id, mark=2)
    elif proof == "other_table":     # the index of a lake that was replaced
        _forge(lake, [loaded, new], "another-table", mark=1)
    elif proof == "no_metadata":
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"source_file": [new], "arrival_date": ["x"]}), path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not parquet")
    assert [f.source_file for f in pending(con, lake, landing)] == [new]
    names, meta = _index(lake)
    assert names == {loaded} and meta == {b"table_id": table_id.encode(), b"mark": b"1"}


def test_an_unwritable_index_costs_only_speed(settings: Settings) -> None:
    con, lake, landing, loaded, new, _ = _one_loaded(settings)
    (lake.root / INDEX_FILE.parent).write_text("a file where the index folder should be")
    assert [f.source_file for f in pending(con, lake, landing)] == [new]
    bronze_ingest(con, lake, landing)
    assert pending(con, lake, landing) == []
    assert _in_bronze(con, lake) == {loaded, new} == {f.source_file for f in discover(landing)}
