"""``agg_compressor_hours`` rows for PostgreSQL's binary COPY, encoded with numpy.

Why not DuckDB's postgres extension (which wrote them before): it converts every array element
on its own, about 1.3 CPU seconds per fleet-day of 108,000 rows x 16 arrays x 24 metrics, on
the same two cores PostgreSQL needs to receive them. Here a chunk of rows is laid out in one
pass per statistic: every field of the binary format after the text keys is a whole number of
4-byte words, so a row is a fixed grid of ``uint32`` words (each written big-endian) from which
the data words of NULL elements are dropped by one boolean selection.

The format (PostgreSQL's ``COPY ... (FORMAT binary)``): a header, then per row a 16-bit field
count and per field a 32-bit length and the bytes of the type's binary send form; here text
(``org_id``, ``compressor_id``), ``timestamptz`` (microseconds since 2000-01-01 UTC) and
one-dimensional arrays (dimensions, a has-NULL flag, the element type, then each element as a
length, -1 for NULL, and its bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from altaviz.telemetry import METRICS
from etl.pivot import INTEGER_STATISTICS, STATISTICS, Pivoted

#: The columns written, in this order.
COLUMNS = ("org_id", "compressor_id", "hour", *STATISTICS)
#: Rows encoded and sent at a time: bounds the memory (~4.7 kB a row laid out) and lets
#: PostgreSQL work on one chunk while the next is encoded.
CHUNK_ROWS = 8192
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
TRAILER = b"\xff\xff"
_PG_EPOCH_HOURS = 262_968  # 2000-01-01T00:00Z in hours since 1970-01-01
_US_PER_HOUR = 3_600_000_000
_FLOAT8_OID, _INT4_OID = 701, 23
_K = len(METRICS)


def _words(stat: str) -> int:
    """32-bit words of one element's value."""
    return 1 if stat in INTEGER_STATISTICS else 2


def _row_dtype(base: type[np.generic]) -> np.dtype[Any]:
    """The fixed part of a row after the text keys, as ``base`` items (``uint32`` words, or
    ``bool``: one keep flag per word): the hour field, then per statistic the array's length
    and header words and each element's length and value words."""
    fields: list[tuple[str, Any, tuple[int, ...]] | tuple[str, Any]] = [("hour", base, (3,))]
    for stat in STATISTICS:
        fields.append((f"{stat}.head", base, (6,)))
        fields.append((f"{stat}.elements", base, (_K, 1 + _words(stat))))  # length, value
    return np.dtype(fields)


_WORDS = _row_dtype(np.uint32)
_KEEP = _row_dtype(np.bool_)
_WIDTH = _WORDS.itemsize // 4


def _be(values: Any) -> np.ndarray:
    """Integers as big-endian 32-bit words (their bytes in network order)."""
    return np.asarray(values, dtype=">i4").view(np.uint32)


def _text_field(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _template() -> np.ndarray:
    """A row's words before its values: every header word, every element's length as if
    present (a NULL element's is set to -1 where it occurs)."""
    t = np.zeros(1, dtype=_WORDS)
    t["hour"][:, 0] = _be(8)
    for stat in STATISTICS:
        words = _words(stat)
        t[f"{stat}.head"] = _be([20 + 4 * _K + 4 * words * _K, 1, 0,
                                 _INT4_OID if words == 1 else _FLOAT8_OID, _K, 1])
        t[f"{stat}.elements"][:, :, 0] = _be(4 * words)
    return t


_TEMPLATE = _template().view(np.uint32)


def encode(p: Pivoted, keys: list[bytes] | None = None) -> bytes:
    """The rows of ``p`` as binary COPY tuples (no header or trailer). ``keys``: each row's
    field count and text key fields (:func:`key_fields`), when already computed.

    Each word is written by one assignment per statistic and position in the element, along
    the rows and metrics: numpy's strided copies are slow when the innermost run is short
    (an element's 2 or 3 words), fast along 24 metrics.
    """
    n = p.rows
    if n == 0:
        return b""
    if keys is None:
        keys = key_fields(p)
    # plain 2-D arrays, viewed as records for the fields: whole-row copies and fills of
    # record arrays go field by field
    grid = np.empty((n, _WIDTH), dtype=np.uint32)
    grid[:] = _TEMPLATE
    row = grid.view(_WORDS).reshape(n)
    flags: np.ndarray | None = None
    keep: np.ndarray | None = None
    hours = ((p.hour.astype(np.int64) - _PG_EPOCH_HOURS) * _US_PER_HOUR).astype(">i8")
    row["hour"][:, 1:] = hours.view(np.uint32).reshape(n, 2)
    for stat in STATISTICS:
        words = _words(stat)
        valid = p.valid[stat]
        elements = row[f"{stat}.elements"]
        values = p.values[stat].astype(">i4" if words == 1 else ">f8").view(
            np.uint32).reshape(n, _K, words)
        for w in range(words):
            elements[:, :, 1 + w] = values[:, :, w]
        if valid.all():
            continue
        present = np.count_nonzero(valid, axis=1)
        head = row[f"{stat}.head"]
        head[:, 0] = _be(20 + 4 * _K + 4 * words * present)  # the array's bytes
        head[:, 2] = _be(present < _K)  # has NULLs
        np.copyto(elements[:, :, 0], _be(-1), where=~valid)
        if keep is None:
            flags = np.ones((n, _WIDTH), dtype=np.bool_)
            keep = flags.view(_KEEP).reshape(n)
        for w in range(words):  # a NULL element has no value words
            keep[f"{stat}.elements"][:, :, 1 + w] = valid
    if flags is None:
        body, lengths = grid.reshape(-1), np.full(n, _WIDTH)
    else:
        body, lengths = grid[flags], np.count_nonzero(flags, axis=1)
    ends = np.cumsum(lengths * 4).tolist()
    data = memoryview(body.data).cast("B")
    parts: list[Any] = [None] * (2 * n)
    parts[0::2] = keys
    parts[1::2] = [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    return b"".join(parts)


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
        yield encode(p.slice(start, start + rows), keys[start:start + rows])


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
