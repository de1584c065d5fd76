"""SQL fragments over the telemetry contract: validation rules, metric expressions and the
wide hourly partials (n, sum, sum of squares, min, max per metric) that every window is built
from. Generated from :mod:`altaviz.telemetry` so a new channel or metric needs no ETL change."""

from __future__ import annotations

from altaviz.core.telemetry import CHANNELS, METRICS

#: Minimum readings in the trailing 24 h before a reading can be called an outlier: with fewer,
#: the baseline's standard deviation means little (two hours at the 10-minute cadence).
MIN_BASELINE_READINGS = 12
OUTLIER_SIGMAS = 4.0
#: Relative rounding error of a sum of squares (double precision, a few hundred terms).
VAR_EPS = 1e-10

#: Quarantine reasons, in the order they are checked (a row gets the first that applies). Only
#: what cannot be placed is quarantined: a bad channel value is that channel missing for that
#: reading (:func:`clean_channels`), the rest of the reading is kept.
REASONS = ("null_required", "bad_timestamp", "unknown_compressor", "conflicting_duplicate",
           "other_organization", "ambiguous_compressor")


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
    """``(reason, detail)`` SQL expressions over a bronze row joined to ``org_id``,
    ``source_org`` and ``attribution`` (see :func:`etl.silver.attributed`): null when the
    reading can be placed (a compressor we know, a plausible timestamp).

    A timestamp is bad when the gateway sent text that is not a timestamp, when it lies in
    the future of its own arrival (beyond 5 minutes of clock skew) or before 2000.
    """
    bad_ts = ("(invalid_values IS NOT NULL AND json_exists(invalid_values, '$.ts')) "
              f"OR {more_than_minutes_after('ts', 'arrived_at', 5)} "
              "OR ts < TIMESTAMPTZ '2000-01-01'")
    reason = f"""CASE
        WHEN compressor_id IS NULL OR ts IS NULL OR arrived_at IS NULL THEN 'null_required'
        WHEN {bad_ts} THEN 'bad_timestamp'
        WHEN org_id IS NULL THEN coalesce(attribution, 'unknown_compressor')
    END"""
    detail = f"""CASE
        WHEN compressor_id IS NULL OR ts IS NULL OR arrived_at IS NULL THEN
            concat_ws(',', CASE WHEN compressor_id IS NULL THEN 'compressor_id' END,
                           CASE WHEN ts IS NULL THEN 'ts' END,
                           CASE WHEN arrived_at IS NULL THEN 'arrived_at' END)
        WHEN {bad_ts} THEN 'ts=' || coalesce(json_extract_string(invalid_values, '$.ts'),
                                             strftime(ts, '%Y-%m-%dT%H:%M:%SZ'))
        WHEN org_id IS NULL THEN concat_ws(': ', source_org, compressor_id)
    END"""
    return reason, detail


def clean_channels(prefix: str = "") -> str:
    """``<channel or null> AS "<channel>"`` for every channel: a value that is not a finite
    number inside the channel's plausibility range becomes null, the channel missing for that
    reading. A sensor that fails sends such values; dropping the whole reading would blind
    every rule on the unit's other channels. Text that did not parse is already null in bronze
    (its raw form stays in ``invalid_values``)."""
    return ", ".join(
        f"CASE WHEN isfinite({prefix}{q(c.name)}) AND {prefix}{q(c.name)} >= {c.low!r} "
        f"AND {prefix}{q(c.name)} <= {c.high!r} THEN {prefix}{q(c.name)} END AS {q(c.name)}"
        for c in CHANNELS)


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

    With ``sums_only``: only ``org_id, compressor_id, metric, hour, n, sum, sumsq`` (what a
    trailing baseline needs; ``source`` then needs only the keys and ``n_i, s_i, q_i``)."""
    arms = []
    for i, m in enumerate(METRICS):
        rest = ("" if sums_only else
                f", lo_{i} AS min, hi_{i} AS max, o_{i} AS outliers, l_{i} AS late")
        arms.append(
            f"SELECT org_id, compressor_id, '{m.name}' AS metric, "
            f"hour, n_{i} AS n, s_{i} AS sum, q_{i} AS sumsq{rest} FROM {source} "
            f"WHERE n_{i} > 0")
    return " UNION ALL ".join(arms)
