"""Persisting rule sets: every loaded set gets a version and a content hash.

Loading the same content again returns the stored version instead of creating a new one, so
restarting the pipeline does not bump versions, while any real change does. Breaches and
clears carry ``rule_set_id``/``rule_version``, so an alert can always be traced to the exact
rules that raised it.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from altaviz.core import db
from altaviz.core.errors import RuleError
from rules.schema import RuleSet


def _transaction(conn: psycopg.Connection[Any],
                 org_id: str | None) -> AbstractContextManager[psycopg.Connection[Any]]:
    # The default set (org_id NULL) is shared by every tenant and writable only by the owner.
    return db.admin(conn) if org_id is None else db.tenant(conn, org_id)


def save_rule_set(conn: psycopg.Connection[Any], rule_set: RuleSet) -> RuleSet:
    """Store ``rule_set`` (idempotent on content) and return it with id and version set."""
    q = db.queries("rules")
    key = {"org_id": rule_set.org_id, "content_hash": rule_set.content_hash}
    for _attempt in range(3):
        with _transaction(conn, rule_set.org_id):
            row = conn.execute(q["find_rule_set"], key).fetchone()
            if row is not None:
                return rule_set.model_copy(update={"rule_set_id": row[0], "version": row[1]})
            version_row = conn.execute(q["next_version"], key).fetchone()
            assert version_row is not None
            inserted = conn.execute(q["insert_rule_set"], {
                **key, "version": version_row[0], "source": rule_set.source,
                "content": Jsonb(rule_set.canonical()),
            }).fetchone()
            if inserted is None:  # a concurrent loader won the race: look again
                continue
            rule_set_id, version = inserted
            with conn.cursor() as cur:
                cur.executemany(q["insert_rule"], [
                    {"rule_set_id": rule_set_id, "rule_id": r.id, "metric": r.metric or "*",
                     "kind": r.kind, "definition": Jsonb(r.model_dump(mode="json"))}
                    for r in rule_set.rules])
            return rule_set.model_copy(update={"rule_set_id": rule_set_id, "version": version})
    raise RuleError(f"could not store rule set {rule_set.source}: concurrent loads kept racing")


def _from_row(row: tuple[Any, ...]) -> RuleSet:
    rule_set_id, org_id, version, source, content = row
    if isinstance(content, str):
        content = json.loads(content)
    return RuleSet.model_validate({"org_id": org_id, "source": source,
                                   "rules": content["rules"], "rule_set_id": rule_set_id,
                                   "version": version})


def get_rule_set(conn: psycopg.Connection[Any], rule_set_id: int,
                 org_id: str | None = None) -> RuleSet:
    """A stored rule set by id (read as ``org_id``'s tenant, or as owner when None)."""
    with _transaction(conn, org_id):
        row = conn.execute(db.queries("rules")["get_rule_set"],
                           {"rule_set_id": rule_set_id}).fetchone()
    if row is None:
        raise RuleError(f"no rule set {rule_set_id}")
    return _from_row(row)


def latest_rule_set(conn: psycopg.Connection[Any], org_id: str | None,
                    reader: str | None = None) -> RuleSet | None:
    """The newest stored version of ``org_id``'s rule set (None: the default set).

    Args:
        reader: read the default set as this organization's tenant (every tenant may read
            it; the runtime login reads nothing outside a tenant).
    """
    with db.tenant(conn, reader) if org_id is None and reader else _transaction(conn, org_id):
        row = conn.execute(db.queries("rules")["latest_rule_set"],
                           {"org_id": org_id}).fetchone()
    return _from_row(row) if row is not None else None
