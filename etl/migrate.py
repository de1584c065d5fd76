"""Upgrading a lake whose silver or gold rows carry no ``org_id``.

Why it exists: the lake keys every reading, partial and window by ``(org_id,
compressor_id)`` (compressor ids are unique within an organization only), so a silver or
gold table without the column cannot be read by the stages. Such a table is rewritten once,
each row taking the organization of its compressor from the fleet (PostgreSQL
``compressors``) where exactly one organization holds the id; an id two organizations hold
(or none) cannot be placed, and the upgrade stops naming those ids unless the operator says
whose they are (``assign``). The rewrite is one Delta commit per table that records the
table's batch mark again, so the stages carry on from where they were; the hot cache and
any handed partials are dropped (the next gold run rebuilds the cache from gold).

``altaviz etl migrate`` runs it; a stage run finds an old table and runs it too
(:class:`etl.pipeline.StageRunner`), so an upgraded installation needs no manual step when
the fleet can place every id.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from pydantic import BaseModel, ConfigDict

from altaviz.core.duck import table_from_arrow
from altaviz.core.errors import InputError
from etl.handoff import Handoff
from etl.hot import HotPartials
from etl.lake import (
    PARTITIONS,
    SCHEMAS,
    TABLE_WRITER_PROPERTIES,
    TARGET_FILE_SIZE,
    WRITER_PROPERTIES,
    Lake,
    commit,
    conform_reader,
)

#: The tables whose rows are keyed by organization and compressor (quarantine has always
#: had a nullable ``org_id``; bronze has none: its organization is its landing prefix).
KEYED = ("silver", "gold")


class MigratedTable(BaseModel):
    """One table the upgrade rewrote."""

    model_config = ConfigDict(frozen=True)

    table: str
    rows: int
    batch_mark: int


def tables_to_migrate(lake: Lake) -> list[str]:
    """The keyed tables of ``lake`` without an ``org_id`` column (none: nothing to do)."""
    out = []
    for name in KEYED:
        if not DeltaTable.is_deltatable(lake.uri(name)):
            continue
        if "org_id" not in pa.schema(lake.table(name).schema().to_arrow()).names:
            out.append(name)
    return out


def migrate_lake(con: duckdb.DuckDBPyConnection, lake: Lake, fleet: list[tuple[str, str]],
                 assign: dict[str, str] | None = None) -> list[MigratedTable]:
    """Give every row of the old keyed tables its ``org_id``; the caller holds the lake's
    writer lock.

    Args:
        con: a DuckDB connection (:func:`altaviz.core.duck.connect`).
        lake: the lake.
        fleet: ``(org_id, compressor_id)`` of every compressor (PostgreSQL).
        assign: compressor id -> organization for ids the fleet cannot place (held by two
            organizations or by none), as the operator knows them.

    Raises:
        InputError: a row's compressor id cannot be placed (named in the message, with the
            remedy); nothing has been rewritten then.
    """
    tables = tables_to_migrate(lake)
    if not tables:
        return []
    holders: dict[str, set[str]] = {}
    for org, comp in fleet:
        holders.setdefault(comp, set()).add(org)
    owner = {c: next(iter(o)) for c, o in holders.items() if len(o) == 1}
    owner.update(assign or {})
    table_from_arrow(con, "migrate_owner", pa.table({
        "compressor_id": pa.array(list(owner), pa.string()),
        "org_id": pa.array(list(owner.values()), pa.string())}))
    unplaced = sorted({str(r[0]) for name in tables for r in con.execute(f"""
        SELECT DISTINCT compressor_id FROM delta_scan('{lake.uri(name)}')
        ANTI JOIN migrate_owner USING (compressor_id)""").fetchall()})
    if unplaced:
        shared = [c for c in unplaced if len(holders.get(c, ())) > 1]
        raise InputError(
            f"the lake at {lake.root} predates organization keys and "
            f"{len(unplaced)} compressor id(s) in it cannot be given an organization: "
            f"{', '.join(unplaced[:20])}{' ...' if len(unplaced) > 20 else ''}"
            f"{f' (held by several organizations: {len(shared)})' if shared else ''}. "
            "Say whose they are with `altaviz etl migrate --assign COMPRESSOR=ORG` "
            "(repeatable), then run the ETL again")
    out = []
    for name in tables:
        mark = lake.batch_mark(name)
        schema = SCHEMAS[name]
        columns = ", ".join(f"t.{f.name}" if f.name != "org_id" else "o.org_id"
                            for f in schema)
        rows = con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri(name)}')").fetchone()
        reader = con.execute(f"""
            SELECT {columns} FROM delta_scan('{lake.uri(name)}') t
            JOIN migrate_owner o USING (compressor_id)""").to_arrow_reader(65_536)
        # one commit: the rows with their organization replace the old ones, and the
        # table's batch mark is recorded again with them
        write_deltalake(lake.uri(name), conform_reader(reader, schema), mode="overwrite",
                        schema_mode="overwrite", partition_by=PARTITIONS[name],
                        commit_properties=commit(name, mark),
                        writer_properties=TABLE_WRITER_PROPERTIES.get(name, WRITER_PROPERTIES),
                        target_file_size=TARGET_FILE_SIZE)
        out.append(MigratedTable(table=name, rows=int(rows[0]) if rows else 0,
                                 batch_mark=mark))
    con.execute("DROP TABLE migrate_owner")
    HotPartials(lake.root).invalidate()
    Handoff(lake.root).discard()
    lake.ensure()   # the statistics columns of the rewritten tables
    return out
