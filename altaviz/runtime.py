"""Altaviz as a running service: a worker and the acknowledgement server in one process.

``altaviz up`` and ``altaviz demo`` run this. Everything durable lives in PostgreSQL, the Delta
tables and Temporal, so stopping the process (Ctrl-C) loses nothing: open alerts wait on their
timers inside Temporal and resume on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from activities.pipeline import Evaluator
from altaviz.app import App
from altaviz.errors import ServiceError
from altaviz.services import port_open
from workflows.models import Evaluation

if TYPE_CHECKING:
    from altaviz.contacts import ContactsFile
    from altaviz.fleet import Fleet
    from rules.schema import RuleSet


@dataclass
class RuntimeOptions:
    """What to run and how."""

    demo: bool = False            # generated link secret, demo inbox
    schedule: bool = True         # create the hourly pipeline schedule
    web: bool = True              # run the acknowledgement server
    escalation_override_hours: float | None = None  # demo: shorten every rule's delay


class Runtime:
    """A worker and the web server on one event loop; ``stop()`` shuts both down cleanly."""

    def __init__(self, app: App, options: RuntimeOptions | None = None) -> None:
        self.app = app
        self.options = options or RuntimeOptions()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None
        self.worker_ready = asyncio.Event()
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

    def _evaluator(self) -> Evaluator:
        from worker import rules_evaluator

        inner = rules_evaluator(self.app.settings)
        hours = self.options.escalation_override_hours
        if hours is None:
            return inner

        def shortened(conn: psycopg.Connection[Any], org_id: str,
                      eval_hours: list[datetime]) -> Evaluation:
            ev = inner(conn, org_id, eval_hours)
            return Evaluation(org_id=ev.org_id, clears=ev.clears, breaches=[
                b.model_copy(update={"escalation_delay_hours": hours}) for b in ev.breaches])

        return shortened

    async def _run_worker(self) -> None:
        from worker import run_worker

        await run_worker(self.app, stop=self._stop, schedule=self.options.schedule,
                         demo=self.options.demo, evaluator=self._evaluator(),
                         ready=self.worker_ready)

    async def _run_web(self) -> None:
        import uvicorn

        from altaviz.web import app_for

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

    async def stop(self) -> None:
        """Stop accepting work, let in-flight tasks finish, close everything."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=60)


def load_reference_data(db_url: str, fleet: Fleet | None, contacts: ContactsFile | None,
                        rules_file: Path) -> RuleSet:
    """Load what a running Altaviz needs before its first pipeline run: the fleet and contacts
    (upserts, when given) and the default rule set (stored once per content hash)."""
    from altaviz import db
    from altaviz.contacts import load_contacts
    from altaviz.fleet_store import load_fleet
    from rules.loader import load_rule_set
    from rules.store import save_rule_set

    with db.connect(db_url) as conn:
        if fleet is not None:
            load_fleet(conn, fleet)
        if contacts is not None:
            load_contacts(conn, contacts)
        return save_rule_set(conn, load_rule_set(rules_file))
