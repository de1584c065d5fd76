"""PostgreSQL access: connections, tenant transactions, named queries and migrations.

Tenant work always runs in :func:`tenant`: a transaction that switches to a tenant role
(``altaviz_app`` for the application, ``altaviz_etl_tenant`` for the ETL's per-organization
writes) and enters one organization with ``enter_tenant`` (a sealed, transaction-local setting:
see migration 100), so row-level security confines it to that organization, the transaction
cannot switch to another, and nothing leaks to the next user of a pooled connection.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.conninfo
from psycopg import sql

from altaviz.core.errors import MigrationError, ServiceError, TenantError
from altaviz.core.settings import mask_url

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"
APP_ROLE = "altaviz_app"
#: The ETL's tenant role (migration 200): its per-organization writes, and nothing else.
ETL_ROLE = "altaviz_etl_tenant"
_MIGRATION_LOCK = 0x414C5441  # advisory lock id ("ALTA"): one migrator at a time
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


#: Server settings of every Altaviz session. JIT off: the rule statements are large generated
#: expressions; on a PostgreSQL built with LLVM (most distribution packages, ``jit = on`` by
#: default) compiling them takes many times as long as running them (bench/bench_rules.py,
#: latest part, against such a server), and nothing here runs long enough to win it back.
SESSION_SETTINGS = {"jit": "off"}


def session_options(url: str) -> str:
    """The ``options`` connection parameter for ``url``: its own options (if any) followed by
    :data:`SESSION_SETTINGS`, so a user's ``?options=...`` is kept."""
    own = psycopg.conninfo.conninfo_to_dict(url).get("options")
    ours = " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items())
    return f"{own} {ours}" if own else ours


def connection_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> ConnectionPool[Any]:
    """An open pool whose connections carry :data:`SESSION_SETTINGS` like :func:`connect`'s
    (use it as a context manager: leaving it closes the pool)."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(url, min_size=min_size, max_size=max_size, open=True,
                          kwargs={"options": session_options(url)})


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection, turning connection failures into a clear :class:`ServiceError`."""
    kwargs.setdefault("options", session_options(url))
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(f"cannot connect to PostgreSQL at {mask_url(url)}: {reason}") from None


@contextmanager
def tenant(conn: psycopg.Connection[Any], org_id: str, *, role: str = APP_ROLE
           ) -> Iterator[psycopg.Connection[Any]]:
    """A transaction confined to one organization by row-level security.

    Args:
        conn: the connection (its login must be a member of ``role``).
        org_id: the organization.
        role: the tenant role to act as: :data:`APP_ROLE` (the application) or
            :data:`ETL_ROLE` (the ETL, whose login may not become the application's role).

    Raises:
        TenantError: ``org_id`` is not a valid organization id.
    """
    if not isinstance(org_id, str) or not _ORG_ID.match(org_id):
        raise TenantError(f"invalid organization id {org_id!r}")
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT enter_tenant(%s)", [org_id])
        yield conn


@contextmanager
def admin(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A transaction as the connecting role (the owner, for migrations and fleet loading; the
    ETL login, for its cross-organization reads and bookkeeping). Never for tenant requests:
    the runtime login can read nothing outside a tenant."""
    with conn.transaction():
        yield conn


def org_ids(conn: psycopg.Connection[Any]) -> list[str]:
    """Every organization id (the one cross-tenant read the runtime login may make)."""
    with conn.transaction():
        return [r[0] for r in conn.execute("SELECT organization_ids()")]


def role_names(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The database's own roles by kind (``owner``, ``runtime``: migration 100; ``etl``:
    migration 200), empty before migration 100."""
    with conn.transaction():
        if conn.execute("SELECT to_regclass('altaviz_roles')").fetchone() == (None,):
            return {}
        return dict(conn.execute("SELECT kind, rolname FROM altaviz_roles").fetchall())


def etl_role_problem(conn: psycopg.Connection[Any], role: str) -> str | None:
    """Why ``role`` may not serve as the ETL login (a dangerous attribute, a membership beyond
    :data:`ETL_ROLE`: migration 200's own check), or None."""
    row = conn.execute("SELECT altaviz_role_problem(%s, ARRAY[%s], true)",
                       [role, ETL_ROLE]).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class Login:
    """Who a connection logs in as, and the powers beyond a tenant's it holds."""

    name: str
    powers: tuple[str, ...]   # e.g. "is a superuser", "owns the schema"; empty: none


def login_powers(conn: psycopg.Connection[Any]) -> Login:
    """The connecting login and what it may do that the runtime and ETL logins must not:
    be a superuser, bypass row-level security, or own (or become the owner of) the schema."""
    with conn.transaction():
        row = conn.execute(
            "SELECT r.rolname, r.rolsuper, r.rolbypassrls, "
            "pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_roles r, pg_class c "
            "WHERE r.rolname = current_user AND c.oid = 'organizations'::regclass").fetchone()
    if row is None:
        return Login(name="?", powers=())
    powers = tuple(what for what, has in (("is a superuser", row[1]),
                                          ("bypasses row-level security", row[2]),
                                          ("owns the schema", row[3])) if has)
    return Login(name=row[0], powers=powers)


@cache
def queries(area: str) -> dict[str, str]:
    """Named queries of ``sql/queries/<area>.sql``, split on ``-- name: <query_name>`` headers."""
    path = QUERIES_DIR / f"{area}.sql"
    text = path.read_text()
    found: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        header = re.match(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", line)
        if header:
            if name is not None:
                found[name] = "\n".join(body).strip()
            name, body = header.group(1), []
            if name in found:
                raise ValueError(f"{path}: duplicate query name {name!r}")
        elif name is not None:
            body.append(line)
    if name is not None:
        found[name] = "\n".join(body).strip()
    return found


# --- migrations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded so an edited applied migration is noticed."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by number; duplicate numbers are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = re.match(r"^(\d+)_([a-z0-9_]+)\.sql$", path.name)
        if not match:
            raise MigrationError(f"{path}: migration files must be named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: migration number {version} is used twice "
                                 f"(also {found[version].path.name})")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class MigrationStatus:
    """Applied and pending migrations of a database."""

    applied: list[tuple[int, str, str]]   # version, name, applied_at (ISO)
    pending: list[Migration]
    changed: list[Migration]               # applied, but the file differs from what was applied


def migration_status(url: str, directory: Path = MIGRATIONS_DIR) -> MigrationStatus:
    """What is applied and what is pending, without changing anything."""
    files = migration_files(directory)
    with connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        rows: list[tuple[int, str, str, Any]] = []
        if exists and exists[0]:
            rows = conn.execute(
                "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall()
    applied = {r[0]: r for r in rows}
    return MigrationStatus(
        applied=[(r[0], r[1], r[3].isoformat()) for r in rows],
        pending=[m for m in files if m.version not in applied],
        changed=[m for m in files if m.version in applied and applied[m.version][2] != m.checksum],
    )


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations in order, each in its own transaction; return those applied.

    Concurrent migrators serialize on an advisory lock, so two processes starting at once apply
    each file once. A failing file is rolled back completely and reported with its name, the
    line of the failing statement and the server's message.

    Raises:
        MigrationError: a migration failed (the database is as it was before that file).
    """
    files = migration_files(directory)
    applied_now: list[Migration] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATION_LOCK])
        try:
            problem = claim_app_role(conn)
            if problem is not None:
                raise MigrationError(problem)
            conn.execute(_BOOKKEEPING)
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for migration in files:
                if migration.version in done:
                    continue
                _apply(conn, migration)
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATION_LOCK])
    return applied_now


def app_role_problem(conn: psycopg.Connection[Any], role: str | None = None) -> str | None:
    """Why ``role`` (default: the connecting one) cannot work as the tenant role, or None.

    Every tenant transaction switches to :data:`APP_ROLE`; a login that is neither a superuser
    nor a member of it fails each one with "permission denied to set role". The answer names
    the statement that fixes it. None too while the tenant role does not exist yet (migration
    002 creates it).
    """
    row = conn.execute(
        "SELECT r.rolsuper, pg_has_role(r.oid, a.oid, 'MEMBER'), r.rolname "
        "FROM pg_roles r, pg_roles a WHERE r.rolname = coalesce(%s, current_user) "
        "AND a.rolname = %s", [role, APP_ROLE]).fetchone()
    if row is None or row[0] or row[1]:
        return None
    return (f"role {row[2]} is not a member of the tenant role {APP_ROLE}, so every tenant "
            f"transaction fails with \"permission denied to set role\"; as a superuser run "
            f"GRANT {APP_ROLE} TO {row[2]} WITH ADMIN OPTION; then `altaviz db migrate` again")


def claim_app_role(conn: psycopg.Connection[Any]) -> str | None:
    """Make the migrating role a member of an existing tenant role, as migration 002 intends,
    and say why not when it may not (the role was created by someone else: the grant needs
    a superuser). Returns :func:`app_role_problem`'s answer after trying."""
    if app_role_problem(conn) is None:
        return None
    try:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(APP_ROLE)))
    except psycopg.errors.InsufficientPrivilege:
        pass
    return app_role_problem(conn)


def split_statements(text: str) -> list[tuple[int, str]]:
    """Split a SQL script into ``(first line, statement)`` pairs.

    Understands quotes, dollar-quoted bodies and comments, so that each statement of a
    migration can be run (and, when it fails, reported) on its own.
    """
    statements: list[tuple[int, str]] = []
    i, n, start = 0, len(text), 0
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif ch in "'\"":
            end = i + 1
            while end < n:
                if text[end] == ch:
                    if end + 1 < n and text[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
            continue
        elif ch == "$":
            tag = re.match(r"\$[A-Za-z_]*\$", text[i:])
            if tag:
                end = text.find(tag.group(0), i + len(tag.group(0)))
                i = n if end < 0 else end + len(tag.group(0))
                continue
        elif ch == ";":
            chunk = text[start:i]
            if _has_code(chunk):
                statements.append(_located(text, start, chunk))
            start = i + 1
        i += 1
    tail = text[start:]
    if _has_code(tail):
        statements.append(_located(text, start, tail))
    return statements


def _has_code(chunk: str) -> bool:
    stripped = re.sub(r"--[^\n]*", "", chunk)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.S)
    return bool(stripped.strip())


def _located(text: str, start: int, chunk: str) -> tuple[int, str]:
    lead = len(chunk) - len(chunk.lstrip())
    body = chunk.strip()
    # Skip leading comment lines so the reported line is the statement's own.
    offset = start + lead
    while body.startswith("--"):
        nl = body.find("\n")
        if nl < 0:
            break
        rest = body[nl + 1:]
        offset += len(body) - len(rest.lstrip()) - 0
        body = rest.lstrip()
    return text.count("\n", 0, offset) + 1, body


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    text = migration.path.read_text()
    line_no, statement = 0, ""
    owner = role_names(conn).get("owner")
    try:
        with conn.transaction():
            if owner is not None:
                # objects of later migrations belong to the owner, whoever migrates
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
            for located in split_statements(text):
                line_no, statement = located  # kept for the error report below
                conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                [migration.version, migration.name, migration.checksum],
            )
    except psycopg.Error as exc:
        message = (exc.diag.message_primary or str(exc)).strip()
        first_line = statement.splitlines()[0][:80] if statement else ""
        raise MigrationError(
            f"migration {migration.path.name} failed at line {line_no} ({first_line!r}): "
            f"{message}; rolled back, the database is unchanged by this file"
        ) from None
