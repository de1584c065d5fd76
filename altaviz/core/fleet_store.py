"""Loading a fleet (organizations, sites, compressors) into PostgreSQL.

Upserts, so re-loading the same fleet file is a no-op and a changed rating updates in place.
Runs as the owner: loading the fleet is an operator action that spans organizations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from altaviz.core.db import admin, queries
from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet


def read_fleet(path: Path) -> Fleet:
    """Read and validate a ``fleet.json`` file.

    Raises:
        InputError: the file is missing, not JSON, or has an invalid record (named).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read fleet file {path}: {exc.strerror}") from None
    try:
        return Fleet.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: {loc}: {first['msg']} "
                         f"({exc.error_count()} problem(s) in all)") from None


def load_fleet(conn: psycopg.Connection[Any], fleet: Fleet) -> dict[str, int]:
    """Upsert every organization, site and compressor in one transaction; return counts."""
    q = queries("fleet")
    with admin(conn), conn.cursor() as cur:
        cur.executemany(q["upsert_organization"],
                        [o.model_dump() for o in fleet.organizations])
        cur.executemany(q["upsert_site"], [s.model_dump() for s in fleet.sites])
        cur.executemany(q["upsert_compressor"], [c.model_dump() for c in fleet.compressors])
    return {"organizations": len(fleet.organizations), "sites": len(fleet.sites),
            "compressors": len(fleet.compressors)}
