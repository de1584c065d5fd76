"""``agg_compressor_hours`` rows for PostgreSQL's binary COPY, encoded with numpy.

Why not DuckDB's postgres extension: it converts every array element on its own (108,000
rows x 16 arrays x 24 metrics a fleet-day), on the same cores PostgreSQL needs to receive
them, and encoding whole grids of rows here takes far less CPU (bench/bench_etl.py, full
phase, reports the aggregates stage's CPU seconds); the ETL need not load the extension.

How: every field of the binary format after the text keys is a whole number of 4-byte words,
so a chunk of rows is a grid of ``uint32`` words (a record view names the fields), filled from
a template row and one cast of each statistic's values into big-endian records; the value
words of NULL elements are then dropped by index. Rows of equal length (key and body) are
copied behind their keys as one 2-D block.

The format (PostgreSQL's ``COPY ... (FORMAT binary)``): a header, then per row a 16-bit field
count and per field a 32-bit length and the bytes of the type's binary send form; here text
(``org_id``, ``compressor_id``), ``timestamptz`` (microseconds since 2000-01-01 UTC) and
one-dimensional arrays (dimensions, a has-NULL flag, the element type, then each element as a
length, -1 for NULL, and its bytes).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from altaviz.core.telemetry import METRICS
from etl.pivot import INTEGER_STATISTICS, STATISTICS, Pivoted

#: The columns written, in this order.
COLUMNS = ("org_id", "compressor_id", "hour", *STATISTICS)
#: Rows encoded and sent at a time: bounds the memory (~4.7 kB a row laid out). Arrays over
#: 32 MB are fresh mappings every time (glibc), whose page faults would slow the encoding:
#: a chunk stays well under that.
CHUNK_ROWS = 4096
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
TRAILER = b"\xff\xff"
_PG_EPOCH_HOURS = 262_968  # 2000-01-01T00:00Z in hours since 1970-01-01
_US_PER_HOUR = 3_600_000_000
_FLOAT8_OID, _INT4_OID = 701, 23
_K = len(METRICS)


def _words(stat: str) -> int:
    """32-bit words of one element's value."""
    return 1 if stat in INTEGER_STATISTICS else 2


def _row_dtype() -> np.dtype[Any]:
    """The fixed part of a row after the text keys: the hour field (length, microseconds),
    then per statistic the array's length and header and each element's length and value,
    all big-endian; every field is a whole number of 4-byte words."""
    fields: list[tuple[str, Any] | tuple[str, Any, tuple[int, ...]]] = [
        ("hour.len", ">i4"), ("hour.value", ">i8")]
    for stat in STATISTICS:
        fields.append((f"{stat}.head", ">i4", (6,)))
        fields.append((f"{stat}.elements", [("len", ">i4"), ("value", _value_type(stat))],
                       (_K,)))
    return np.dtype(fields)


def _value_type(stat: str) -> str:
    return ">i4" if stat in INTEGER_STATISTICS else ">f8"


_WORDS = _row_dtype()
_WIDTH = _WORDS.itemsize // 4
_FIELDS = _WORDS.fields
assert _FIELDS is not None
#: Per statistic, the word (of a row's :data:`_WORDS`) where each metric's value starts.
_VALUE_WORD = {
    stat: (_FIELDS[f"{stat}.elements"][1] // 4
           + np.arange(_K) * (1 + _words(stat)) + 1) for stat in STATISTICS}
#: Rows laid out at a time: the statistics' writes then stay within ~1 MB (a chunk's whole
#: grid is ~10 MB, and writing it a statistic at a time would miss the caches).
_BLOCK_ROWS = 256


def _text_field(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _template() -> np.ndarray:
    """A row's words before its values: every header word, every element's length as if
    present (a NULL element's is set to -1 where it occurs)."""
    t = np.zeros(1, dtype=_WORDS)
    t["hour.len"] = 8
    for stat in STATISTICS:
        words = _words(stat)
        t[f"{stat}.head"] = [20 + 4 * _K + 4 * words * _K, 1, 0,
                             _INT4_OID if words == 1 else _FLOAT8_OID, _K, 1]
        t[f"{stat}.elements"]["len"] = 4 * words
    return t.view(np.uint32)


_TEMPLATE = _template()


def encode(p: Pivoted, keys: list[bytes] | None = None) -> bytes:
    """The rows of ``p`` as binary COPY tuples (no header or trailer). ``keys``: each row's
    field count and text key fields (:func:`key_fields`), when already computed.

    Rows come out grouped by their length (stable within a group): COPY does not care about
    order, and rows of equal key and body length are copied as one 2-D block, where joining
    ~100,000 variable slices a day would cost more than laying the rows out (:func:`_body`).
    """
    n = p.rows
    if n == 0:
        return b""
    if keys is None:
        keys = key_fields(p)
    key_len = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    absent = _absent(p)
    body_words = np.full(n, _WIDTH, dtype=np.int64)
    for stat in STATISTICS:
        body_words -= _words(stat) * absent[stat]
    group = key_len * (_WIDTH + 1) + body_words
    order = np.argsort(group, kind="stable")
    if not np.array_equal(order, np.arange(n)):
        p = p.select(order)
        group, key_len, body_words = group[order], key_len[order], body_words[order]
        keys = [keys[i] for i in order.tolist()]
        absent = {stat: a[order] for stat, a in absent.items()}
    body = _body(p, absent)
    starts = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), n]
    parts: list[memoryview] = []
    at = 0
    for a, b in itertools.pairwise(starts):
        kl, bw = int(key_len[a]), int(body_words[a])
        block = np.empty((b - a, kl + 4 * bw), dtype=np.uint8)
        block[:, :kl] = np.frombuffer(b"".join(keys[a:b]), dtype=np.uint8).reshape(b - a, kl)
        block[:, kl:] = body[at:at + (b - a) * bw].view(np.uint8).reshape(b - a, 4 * bw)
        at += (b - a) * bw
        parts.append(block.data)
    return b"".join(parts)


def _absent(p: Pivoted) -> dict[str, np.ndarray]:
    """Per statistic, each row's number of NULL elements (statistics sharing a validity
    array, as most do, share one count)."""
    counts: dict[int, np.ndarray] = {}
    for valid in p.valid.values():
        if id(valid) not in counts:
            counts[id(valid)] = _K - np.count_nonzero(valid, axis=1)
    return {stat: counts[id(p.valid[stat])] for stat in STATISTICS}


def _body(p: Pivoted, absent: dict[str, np.ndarray]) -> np.ndarray:
    """Every row's words after the text keys, concatenated (``uint32``, big-endian values).

    Laid out :data:`_BLOCK_ROWS` rows at a time: the template row, then each statistic's
    values cast into its big-endian element records in one assignment (faster than writing
    the value words as separate ``uint32`` planes). ``absent``: :func:`_absent`
    of ``p``.
    """
    n = p.rows
    grid = np.empty((n, _WIDTH), dtype=np.uint32)
    hours = (p.hour.astype(np.int64) - _PG_EPOCH_HOURS) * _US_PER_HOUR
    for a in range(0, n, _BLOCK_ROWS):
        block = grid[a:a + _BLOCK_ROWS]
        block[:] = _TEMPLATE
        row = block.view(_WORDS).reshape(len(block))
        row["hour.value"] = hours[a:a + _BLOCK_ROWS]
        for stat in STATISTICS:
            row[f"{stat}.elements"]["value"] = p.values[stat][a:a + _BLOCK_ROWS]
    # NULL elements: length -1, no value words (dropped below), the array shorter
    row = grid.view(_WORDS).reshape(n)
    dropped: list[np.ndarray] = []
    for stat in STATISTICS:
        valid = p.valid[stat]
        if not absent[stat].any():
            continue
        words = _words(stat)
        head = row[f"{stat}.head"]
        head[:, 0] = 20 + 4 * _K + 4 * words * (_K - absent[stat])  # the array's bytes
        head[:, 2] = absent[stat] > 0  # has NULLs
        np.copyto(row[f"{stat}.elements"]["len"], -1, where=~valid)
        rows, metrics = np.nonzero(~valid)
        first = rows * _WIDTH + _VALUE_WORD[stat][metrics]
        dropped.extend(first + w for w in range(words))
    if not dropped:
        return grid.reshape(-1)
    keep = np.ones(n * _WIDTH, dtype=np.bool_)
    keep[np.concatenate(dropped)] = False
    return grid.reshape(-1)[keep]


def key_fields(p: Pivoted) -> list[bytes]:
    """Each row's field count and ``org_id`` and ``compressor_id`` fields: built once per
    distinct pair (a compressor belongs to one organization: ~4,500 for a fleet-day)."""
    pairs = p.org * max(len(p.compressors), 1) + p.comp
    distinct, which = np.unique(pairs, return_inverse=True)
    orgs = p.orgs.to_pylist()
    comps = p.compressors.to_pylist()
    count = struct.pack(">h", len(COLUMNS))
    built = [count + _text_field(orgs[o]) + _text_field(comps[c])
             for o, c in zip(*np.divmod(distinct, max(len(comps), 1)), strict=True)]
    return [built[i] for i in which.reshape(-1).tolist()]


def chunks(p: Pivoted, rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """:func:`encode` of ``p`` a chunk of ``rows`` rows at a time."""
    keys = key_fields(p)
    for start in range(0, p.rows, rows):
        yield encode(p.select(slice(start, start + rows)), keys[start:start + rows])


def copy_rows(conn: psycopg.Connection[Any], table: str, p: Pivoted, *,
              rows: int = CHUNK_ROWS) -> None:
    """COPY the rows of ``p`` into ``public.<table>`` on ``conn``, in one transaction."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(HEADER)
        for chunk in chunks(p, rows):
            copy.write(chunk)
        copy.write(TRAILER)

