"""The application context: settings plus the services they point at, started on demand.

Commands ask the :class:`App` for a database URL or a Temporal address; with none configured it
starts (or attaches to) the embedded one under the data directory, and :meth:`App.close`
detaches again, so one-shot commands and long-running ones share the same servers.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from altaviz.app.services import EmbeddedPostgres, EmbeddedTemporal, TemporalServerInfo
from altaviz.core.db import connect, login_powers
from altaviz.core.db import migrate as run_migrations
from altaviz.core.errors import ConfigError
from altaviz.core.settings import Settings, load_settings
from altaviz.core.temporal_connect import connect as temporal_connect
from workflows import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import psycopg
    from temporalio.client import Client


class App:
    """Lazily resolved settings and services for one Altaviz process."""

    def __init__(self, config_file: Path | None = None, debug: bool = False,
                 settings: Settings | None = None) -> None:
        self._config_file = config_file
        self.debug = debug
        self._settings = settings
        self._pg: EmbeddedPostgres | None = None
        self._db_url: str | None = None
        self._owner_url: str | None = None
        self._etl_url: str | None = None
        self._temporal: EmbeddedTemporal | None = None
        self._temporal_info: TemporalServerInfo | None = None
        self._client: Client | None = None

    @property
    def settings(self) -> Settings:
        """The validated settings (loaded on first use; :class:`ConfigError` if invalid)."""
        if self._settings is None:
            if self._config_file is not None and not self._config_file.exists():
                raise ConfigError(f"config file {self._config_file} does not exist")
            self._settings = load_settings(self._config_file)
        return self._settings

    @property
    def embedded_postgres(self) -> bool:
        """Whether Altaviz runs its own PostgreSQL (no ALTAVIZ_DATABASE_URL)."""
        return self.settings.database_url is None

    @property
    def embedded_temporal(self) -> bool:
        """Whether Altaviz runs its own Temporal dev server (no ALTAVIZ_TEMPORAL_ADDRESS)."""
        return self.settings.temporal_address is None

    def database_url(self) -> str:
        """The runtime login's URL (the worker, the web server and the CLI's reads and tenant
        work), starting the embedded server and applying pending migrations if needed."""
        if self._db_url is None:
            owner_url = self.owner_database_url()
            if self._pg is not None:
                self._db_url = self._pg.role_urls()["runtime"]
            else:
                self._db_url = self.settings.database_url or owner_url
                _warn_if_privileged(self._db_url)
        return self._db_url

    def owner_database_url(self, *, migrate: bool = True) -> str:
        """The schema owner's URL (migrations, fleet loading), starting the embedded
        server if none is configured.

        Args:
            migrate: apply pending migrations first (idempotent), so every command sees the
                schema it expects.
        """
        if self._owner_url is None:
            url = self.settings.database_owner_url or self.settings.database_url
            if url is None:
                self.settings.data_dir.mkdir(parents=True, exist_ok=True)
                self._pg = EmbeddedPostgres(self.settings.data_dir)
                url = self._pg.start()   # the superuser: migrations create the roles
            if migrate:
                run_migrations(url)
                if self._pg is not None:
                    url = self._pg.role_urls()["owner"]
            self._owner_url = url
        return self._owner_url

    def etl_database_url(self) -> str:
        """The ETL login's URL (``altaviz etl run``, the ETL worker): the embedded server's
        ``<database>_etl``, ALTAVIZ_ETL_DATABASE_URL, or else the owner's URL (an external
        server set up before the ETL had a role of its own), with a warning."""
        if self._etl_url is None:
            owner_url = self.owner_database_url()
            if self._pg is not None:
                self._etl_url = self._pg.role_urls()["etl"]
            elif self.settings.etl_database_url is not None:
                self._etl_url = self.settings.etl_database_url
            else:
                log.warning("ALTAVIZ_ETL_DATABASE_URL is not set: the ETL logs in as the schema "
                            "owner; set it to the ETL login <database>_etl (docs/OPERATIONS.md, "
                            "\"Database roles\")")
                self._etl_url = owner_url
        return self._etl_url

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection as the runtime login (see :meth:`database_url`)."""
        return connect(self.database_url(), **kwargs)

    def connect_owner(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new connection as the schema owner (see :meth:`owner_database_url`)."""
        return connect(self.owner_database_url(), **kwargs)

    def temporal(self) -> TemporalServerInfo | None:
        """The embedded Temporal server (started if needed), or None when one is configured."""
        if not self.embedded_temporal:
            return None
        if self._temporal_info is None:

            s = self.settings
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self._temporal = EmbeddedTemporal(
                s.data_dir, port=s.temporal_port, ui_port=s.temporal_ui_port,
                namespace=s.temporal_namespace, search_attributes=SEARCH_ATTRIBUTES)
            self._temporal_info = self._temporal.start()
        return self._temporal_info

    def temporal_address(self) -> str:
        """The Temporal frontend address, starting the embedded dev server if none is set."""
        configured = self.settings.temporal_address
        if configured is not None:
            return configured
        info = self.temporal()
        assert info is not None
        return info.address

    def temporal_ui_url(self) -> str | None:
        """The Temporal Web UI, when Altaviz runs the dev server (else the cluster's own UI)."""
        info = self.temporal() if self.embedded_temporal else None
        return info.ui_url if info else None

    async def temporal_client(self) -> Client:
        """A Temporal client with the pydantic data converter and the configured TLS and API
        key (one per process; see :func:`altaviz.core.temporal_connect.connect`)."""
        if self._client is None:
            self._client = await temporal_connect(self.settings, self.temporal_address())
        return self._client

    def close(self) -> None:
        """Detach from embedded services (the last process attached stops them)."""
        self._client = None
        if self._temporal is not None:
            with contextlib.suppress(Exception):
                self._temporal.release()
            self._temporal = None
            self._temporal_info = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.release()
            self._pg = None
        self._db_url = None
        self._owner_url = None
        self._etl_url = None


def _warn_if_privileged(url: str) -> None:
    """Say so when the runtime URL logs in with more than the runtime login needs (a single
    owner URL for everything, as before the roles were split)."""
    with connect(url, autocommit=True) as conn:
        who = login_powers(conn)
    if who.powers:
        log.warning("ALTAVIZ_DATABASE_URL logs in as %s, which owns the schema or bypasses "
                    "row-level security: set ALTAVIZ_DATABASE_OWNER_URL to the owner and "
                    "ALTAVIZ_DATABASE_URL to the runtime login (docs/OPERATIONS.md, "
                    "\"Database roles\")", who.name)
