"""Loading a fleet (organizations, sites, compressors) into PostgreSQL.

Upserts, so re-loading the same fleet file is a no-op and a changed rating updates in place.
Runs as the owner: loading the fleet is an operator action that spans organizations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from altaviz.core.catalog import Catalog, builtin_catalog
from altaviz.core.db import admin, queries
from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from altaviz.core.located import key_lines, located


def read_fleet(path: Path, catalog: Catalog | None = None) -> Fleet:
    """Read and validate a ``fleet.json`` file against the model catalog.

    Args:
        path: the fleet file.
        catalog: the models a compressor may name (default: the built-in catalog; pass
            ``settings.catalog`` to accept an operator's models).

    Raises:
        InputError: the file is missing, not JSON, or has an invalid record; the message
            names the file, the line and the key path.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read fleet file {path}: {exc.strerror}") from None
    try:
        return Fleet.model_validate_json(text, context={"catalog": catalog or builtin_catalog()})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = located(str(path), key_lines(text), tuple(first["loc"]), first["msg"])
        raise InputError(f"{where} ({exc.error_count()} problem(s) in all)") from None


def load_fleet(conn: psycopg.Connection[Any], fleet: Fleet) -> dict[str, int]:
    """Upsert every organization, site and compressor in one transaction; return counts."""
    q = queries("fleet")
    with admin(conn), conn.cursor() as cur:
        cur.executemany(q["upsert_organization"],
                        [o.model_dump() for o in fleet.organizations])
        cur.executemany(q["upsert_site"], [s.model_dump() for s in fleet.sites])
        cur.executemany(q["upsert_compressor"],
                        [{**c.model_dump(), "channels": list(c.channels)}
                         for c in fleet.compressors])
    return {"organizations": len(fleet.organizations), "sites": len(fleet.sites),
            "compressors": len(fleet.compressors)}
