"""SQL fragments over the telemetry contract: validation rules, metric expressions and the
wide hourly partials (n, sum, sum of squares, min, max per metric) that every window is built
from. Generated from :mod:`altaviz.telemetry` so a new channel or metric needs no ETL change."""

from __future__ import annotations

from collections.abc import Callable

from altaviz.core.telemetry import CHANNELS, METRICS, Channel

#: Minimum readings in the trailing 24 h before a reading can be called an outlier: with fewer,
#: the baseline's standard deviation means little (two hours at the 10-minute cadence).
MIN_BASELINE_READINGS = 12
OUTLIER_SIGMAS = 4.0
#: Relative rounding error of a sum of squares (double precision, a few hundred terms).
VAR_EPS = 1e-10

#: Quarantine reasons, in the order they are checked (a row gets the first that applies).
REASONS = ("null_required", "bad_timestamp", "unknown_compressor", "wrong_type",
           "out_of_range", "conflicting_duplicate")


#: Microseconds per hour and per minute (timestamps are compared and bucketed as epoch
#: microseconds, see :func:`hour_of`).
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000


def hour_of(ts: str) -> str:
    """The UTC hour a ``TIMESTAMPTZ`` expression falls in, as ``TIMESTAMPTZ``.

    Integer arithmetic on the epoch microseconds instead of ``date_trunc('hour', ts)``:
    DuckDB computes ``date_trunc`` (and ``strftime``, ``+``/``-`` with intervals) on
    ``TIMESTAMPTZ`` through ICU's calendar, an order of magnitude slower over a bulk load's
    readings. Exact for instants after 1970 (floor and truncation agree there); readings
    before 2000 never pass validation."""
    return f"make_timestamptz(epoch_us({ts}) // {HOUR_US} * {HOUR_US})"


def utc_date_of(ts: str) -> str:
    """The UTC date (``YYYY-MM-DD`` text, the lake's partition value) of a ``TIMESTAMPTZ``:
    formatted as a plain ``TIMESTAMP`` of the same microseconds, without ICU's calendar (see
    :func:`hour_of`)."""
    return f"strftime(make_timestamp(epoch_us({ts})), '%Y-%m-%d')"


def more_than_minutes_after(later: str, earlier: str, minutes: int) -> str:
    """``later - earlier > minutes`` for two ``TIMESTAMPTZ`` expressions, on epoch
    microseconds: an interval subtraction and comparison goes through ICU's calendar (see
    :func:`hour_of`)."""
    return f"epoch_us({later}) - epoch_us({earlier}) > {int(minutes) * MINUTE_US}"


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def channel_list(prefix: str = "") -> str:
    """The channel columns, comma separated (optionally qualified)."""
    return ", ".join(prefix + q(c.name) for c in CHANNELS)


def reason_sql() -> tuple[str, str]:
    """``(reason, detail)`` SQL expressions over a bronze row joined to ``org_id``.

    A timestamp is bad when the gateway sent text that is not a timestamp, when it lies in
    the future of its own arrival (beyond 5 minutes of clock skew) or before 2000.
    """
    required = [c for c in CHANNELS if c.required]
    null_ch = " OR ".join(f"{q(c.name)} IS NULL" for c in required)
    nonfinite = " OR ".join(f"NOT isfinite({q(c.name)})" for c in CHANNELS)
    out = " OR ".join(_outside(c) for c in CHANNELS)

    def names(cond: Callable[[Channel], str], cols: list[Channel]) -> str:
        parts = ", ".join(f"CASE WHEN {cond(c)} THEN '{c.name}' END" for c in cols)
        return f"concat_ws(',', {parts})"

    bad_ts = ("(invalid_values IS NOT NULL AND json_exists(invalid_values, '$.ts')) "
              f"OR {more_than_minutes_after('ts', 'arrived_at', 5)} "
              "OR ts < TIMESTAMPTZ '2000-01-01'")
    bad_type = ("(invalid_values IS NOT NULL AND (json_keys(invalid_values) <> ['ts'] "
                "OR json_exists(invalid_values, '$.arrived_at'))) OR " + nonfinite)
    reason = f"""CASE
        WHEN compressor_id IS NULL OR ts IS NULL OR arrived_at IS NULL THEN 'null_required'
        WHEN {bad_ts} THEN 'bad_timestamp'
        WHEN org_id IS NULL THEN 'unknown_compressor'
        WHEN {bad_type} THEN 'wrong_type'
        WHEN {null_ch} THEN 'null_required'
        WHEN {out} THEN 'out_of_range'
    END"""
    detail = f"""CASE
        WHEN compressor_id IS NULL OR ts IS NULL OR arrived_at IS NULL THEN
            concat_ws(',', CASE WHEN compressor_id IS NULL THEN 'compressor_id' END,
                           CASE WHEN ts IS NULL THEN 'ts' END,
                           CASE WHEN arrived_at IS NULL THEN 'arrived_at' END)
        WHEN {bad_ts} THEN 'ts=' || coalesce(json_extract_string(invalid_values, '$.ts'),
                                             strftime(ts, '%Y-%m-%dT%H:%M:%SZ'))
        WHEN org_id IS NULL THEN compressor_id
        WHEN {bad_type} THEN coalesce(invalid_values, {names(_nonfinite, list(CHANNELS))})
        WHEN {null_ch} THEN {names(lambda c: f"{q(c.name)} IS NULL", required)}
        WHEN {out} THEN {names(_outside, list(CHANNELS))}
    END"""
    return reason, detail


def _nonfinite(c: Channel) -> str:
    return f"NOT isfinite({q(c.name)})"


def _outside(c: Channel) -> str:
    return f"({q(c.name)} < {c.low!r} OR {q(c.name)} > {c.high!r})"


def metric_columns() -> str:
    """``<metric sql> AS "<metric>"`` for every metric (wide, one column per metric)."""
    return ", ".join(f"({m.sql}) AS {q(m.name)}" for m in METRICS)


def partial_aggregates() -> str:
    """Hourly partial aggregates of every metric column: ``n_i, s_i, q_i, lo_i, hi_i`` (count,
    sum, sum of squares, min, max) for the i-th metric."""
    parts = []
    for i, m in enumerate(METRICS):
        c = q(m.name)
        parts.append(f"count({c}) AS n_{i}, sum({c}) AS s_{i}, sum({c} * {c}) AS q_{i}, "
                     f"min({c}) AS lo_{i}, max({c}) AS hi_{i}")
    return ", ".join(parts)


def flag_aggregates() -> str:
    """Outlier (``o_i``) and late (``l_i``) reading counts of every metric, over silver rows.

    Meant for the flagged rows only (``late OR len(outlier_metrics) > 0``, a small share):
    evaluated over every reading, the 48 filtered counts would cost more than all other
    partials together.
    """
    return ", ".join(
        f"count({q(m.name)}) FILTER (WHERE list_contains(outlier_metrics, '{m.name}')) "
        f"AS o_{i}, count({q(m.name)}) FILTER (WHERE late) AS l_{i}"
        for i, m in enumerate(METRICS))


def unpivot_partials(source: str, sums_only: bool = False) -> str:
    """Long rows (one per metric with n > 0) from the wide partials in ``source``.

    With ``sums_only``: only ``compressor_id, metric, hour, n, sum, sumsq`` (what a trailing
    baseline needs; ``source`` then needs only the ``n_i, s_i, q_i`` columns)."""
    arms = []
    for i, m in enumerate(METRICS):
        rest = ("" if sums_only else
                f", lo_{i} AS min, hi_{i} AS max, o_{i} AS outliers, l_{i} AS late")
        arms.append(
            f"SELECT {'' if sums_only else 'org_id, '}compressor_id, '{m.name}' AS metric, "
            f"hour, n_{i} AS n, s_{i} AS sum, q_{i} AS sumsq{rest} FROM {source} "
            f"WHERE n_{i} > 0")
    return " UNION ALL ".join(arms)
