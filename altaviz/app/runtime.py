"""Altaviz as a running service: the workers and the acknowledgement server in one process.

``altaviz up``, ``altaviz worker`` (without the web server) and ``altaviz demo`` run this, so
all three get the workers that ``worker.compose`` and ``worker.compose_etl`` wire: the alerts
worker, the ETL worker or both (``Settings.workers``, ``altaviz worker --only``). Everything
durable lives in PostgreSQL, the Delta tables and Temporal, so stopping the process (Ctrl-C)
loses nothing: open alerts wait on their timers inside Temporal and resume on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from temporalio.worker import Worker

from altaviz.app.context import App
from altaviz.app.services import port_open
from altaviz.app.temporal_setup import (
    ensure_reconcile_schedule,
    ensure_schedule,
    ensure_search_attributes,
)
from altaviz.app.web import app_for
from altaviz.core import db
from altaviz.core.catalog import Catalog
from altaviz.core.contacts import ContactsFile, load_contacts
from altaviz.core.errors import ServiceError
from altaviz.core.fleet import Fleet
from altaviz.core.fleet_store import load_fleet
from rules.loader import load_rule_set
from rules.schema import RuleSet
from rules.store import save_rule_set
from worker import WorkerOptions, Workers, run_worker


@dataclass
class RuntimeOptions:
    """What to run and how."""

    demo: bool = False            # generated link secret, demo inbox
    schedule: bool = True         # create the hourly pipeline schedule
    web: bool = True              # run the acknowledgement server
    escalation_override_hours: float | None = None  # demo: shorten every rule's delay
    workers: Literal["all", "alerts", "etl"] | None = None  # None: the settings' choice


class Runtime:
    """The workers and the web server on one event loop; ``stop()`` shuts all down cleanly."""

    def __init__(self, app: App, options: RuntimeOptions | None = None) -> None:
        self.app = app
        self.options = options or RuntimeOptions()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None
        self.worker_ready = asyncio.Event()
        #: The running workers (set once they poll), for callers that inspect their
        #: registrations: the alerts worker and the ETL worker (None where not run here).
        self.worker: Worker | None = None
        self.etl_worker: Worker | None = None
        self.web_ready = asyncio.Event()

    @property
    def base_url(self) -> str:
        """Where technicians' links point."""
        return self.app.settings.base_url

    async def start(self) -> None:
        """Start the worker (and the web server); returns once both are accepting work."""
        settings = self.app.settings
        if self.options.web and port_open(settings.http_host, settings.http_port):
            raise ServiceError(
                f"port {settings.http_port} on {settings.http_host} is already in use (another "
                f"`altaviz up`/`demo`?); set ALTAVIZ_HTTP_PORT to another port")
        self._tasks.append(asyncio.create_task(self._run_worker(), name="altaviz-worker"))
        if self.options.web:
            self._tasks.append(asyncio.create_task(self._run_web(), name="altaviz-web"))
        deadline = asyncio.get_running_loop().time() + 120
        while not (self.worker_ready.is_set()
                   and (self.web_ready.is_set() or not self.options.web)):
            for task in self._tasks:
                if task.done():
                    task.result()  # re-raises the component's failure
                    raise ServiceError(f"{task.get_name()} stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise ServiceError("the worker or web server did not start within 120 s")
            await asyncio.sleep(0.05)

    async def _run_worker(self) -> None:
        """Prepare the Temporal server (search attributes, schedule), then run the workers.

        An ETL-only process leaves both to the alerts workers, which start the pipeline."""
        settings = self.app.settings
        db_url = self.app.database_url()
        etl_url = self.app.etl_database_url()
        # the default rule set, stored by the owner (the runtime login cannot write it)
        await asyncio.to_thread(load_reference_data, self.app.owner_database_url(), None, None,
                                settings.rules_file)
        client = await self.app.temporal_client()
        only = self.options.workers or settings.workers
        if only != "etl":
            await ensure_search_attributes(client, settings.temporal_namespace)
            if self.options.schedule:
                await ensure_schedule(client, task_queue=settings.task_queue,
                                      etl_task_queue=settings.etl_queue,
                                      reminder_minutes=settings.reminder_minutes)
                await ensure_reconcile_schedule(client, task_queue=settings.task_queue)
        options = WorkerOptions(demo=self.options.demo,
                                escalation_override_hours=self.options.escalation_override_hours)

        def ready(workers: Workers) -> None:
            self.worker, self.etl_worker = workers.alerts, workers.etl
            self.worker_ready.set()

        await run_worker(client, settings, db_url, etl_url=etl_url, options=options,
                         stop=self._stop, ready=ready, only=only)

    async def _run_web(self) -> None:
        settings = self.app.settings
        web = await asyncio.to_thread(app_for, self.app, demo=self.options.demo)
        # log_config/log_level None: leave the process's logging as the CLI configured it
        # (uvicorn would otherwise reconfigure logging globally for everything in the process).
        config = uvicorn.Config(web, host=settings.http_host, port=settings.http_port,
                                log_config=None, log_level=None, server_header=False,
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the runtime owns Ctrl-C
        serve = asyncio.create_task(self._server.serve())
        while not self._server.started and not serve.done():
            await asyncio.sleep(0.05)
        if serve.done():
            serve.result()
        self.web_ready.set()
        await serve

    async def wait(self) -> None:
        """Until :meth:`stop` is called (or a component fails)."""
        stopper = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait([stopper, *self._tasks],
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in self._tasks:
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def request_stop(self) -> None:
        """Ask the runtime to stop (safe from a signal handler); :meth:`wait` then returns."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop accepting work, let in-flight tasks finish, close everything."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=60)


def load_reference_data(db_url: str, fleet: Fleet | None, contacts: ContactsFile | None,
                        rules_file: Path, catalog: Catalog | None = None) -> RuleSet:
    """Load what a running Altaviz needs before its first pipeline run: the fleet and contacts
    (upserts, when given) and the default rule set (stored once per content hash), its
    models checked against ``catalog`` (default: the built-in one)."""
    with db.connect(db_url) as conn:
        if fleet is not None:
            load_fleet(conn, fleet)
        if contacts is not None:
            load_contacts(conn, contacts)
        return save_rule_set(conn, load_rule_set(rules_file, catalog=catalog))
