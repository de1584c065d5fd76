"""``altaviz doctor``: check every prerequisite an operator can get wrong, each with its fix.

Database reachable, migrations current, roles and memberships, row-level security forced,
Temporal reachable, the namespace and its search attributes, task queues polled, the link
secret's strength, the public URL reachable from this server, each contact's channels valid;
``--send-test CONTACT`` also sends a test notification to one contact. Each check prints
``ok`` and what it found, or ``FAIL`` and what to do. ``altaviz up`` runs the checks that do
not need a running service before it writes anything.
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
)
from temporalio.client import Client

from altaviz.app.context import App
from altaviz.core import db
from altaviz.core.contacts import expand_secrets, load_apprise, read_contacts, url_scheme
from altaviz.core.errors import AltavizError, InputError, ServiceError
from altaviz.core.links import check_secret
from altaviz.core.settings import Settings, mask_url
from altaviz.core.temporal_connect import connect as temporal_connect
from workflows import SEARCH_ATTRIBUTES

#: Seconds each network check may take before it counts as unreachable.
CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``detail`` is what was found (ok) or what to do (failed)."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``ok    name: detail`` or ``FAIL  name: detail``."""
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def register(sub: Any) -> None:
    """Add ``doctor``."""
    p = sub.add_parser(
        "doctor", help="check every prerequisite (database, roles, Temporal, queues, secret, "
                       "public URL, contacts) and say how to fix what is wrong",
        description="Runs every check and prints ok or what to do for each; exits 1 when any "
                    "fails. Examples: `altaviz doctor`; `altaviz doctor --send-test "
                    "acme/jo-rivera` (also sends a test notification to that contact).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--send-test", metavar="CONTACT",
                   help="send a test notification to this contact ([ORG/]CONTACT_ID) on each "
                        "of its channels")
    p.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace, app: App) -> int:
    checks = run_checks(app, service=True, print_each=True)
    if args.send_test:
        for check in send_test(app, args.send_test):
            checks.append(check)
            print(check.line(), flush=True)
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


def run_checks(app: App, *, service: bool, print_each: bool = False) -> list[Check]:
    """Every check, in the order an operator fixes things.

    Args:
        service: also check what only a running Altaviz provides (task queues polled, the
            public URL answering); ``altaviz up`` checks before it starts them.
        print_each: print each check's line as soon as it is known.
    """
    out: list[Check] = []

    def add(found: Check | list[Check]) -> None:
        for c in found if isinstance(found, list) else [found]:
            out.append(c)
            if print_each:
                print(c.line(), flush=True)

    add(database_checks(app))
    add(asyncio.run(temporal_checks(app, service=service)))
    add(link_secret_check(app.settings))
    if service:
        add(public_url_check(app.settings))
    add(contact_checks(app, database=out[0].ok))
    return out


# --- database -------------------------------------------------------------------------------

def database_checks(app: App) -> list[Check]:
    """Reachable, migrations current, roles and memberships, row-level security forced."""
    try:
        url = _owner_url(app)
        with db.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except AltavizError as exc:
        return [Check("database", False, f"{exc}; check ALTAVIZ_DATABASE_OWNER_URL / "
                                         "ALTAVIZ_DATABASE_URL and that the server runs")]
    where = "embedded PostgreSQL" if app.embedded_postgres else mask_url(url)
    out = [Check("database", True, f"reachable ({where}, PostgreSQL "
                                   f"{version[0] if version else '?'})")]
    status = db.migration_status(url)
    if status.changed:
        out.append(Check("migrations", False, "applied migration files were edited: "
                         + ", ".join(m.path.name for m in status.changed)
                         + "; restore them from the release"))
    elif status.pending:
        out.append(Check("migrations", False, f"{len(status.pending)} pending (first "
                         f"{status.pending[0].path.name}): run `altaviz db migrate`"))
    else:
        out.append(Check("migrations", True, f"{len(status.applied)} applied, none pending"))
    with db.connect(url, autocommit=True) as conn:
        out.append(_roles_check(conn, app.settings))
        out.append(_rls_check(conn))
    if not app.embedded_postgres and app.settings.database_url:
        out.append(_runtime_login_check(app.settings.database_url))
        out.append(_etl_login_check(app.settings.etl_database_url))
    return out


def _roles_check(conn: Any, settings: Settings) -> Check:
    problems = []
    own = db.app_role_problem(conn)
    if own is not None:
        problems.append(own)
    roles = db.role_names(conn)
    for kind in ("owner", "runtime"):
        name = roles.get(kind)
        if name is not None:
            problem = db.app_role_problem(conn, name)
            if problem is not None:
                problems.append(problem)
    if "etl" in roles:
        problem = db.etl_role_problem(conn, roles["etl"])
        if problem is not None:
            problems.append(problem)
    if problems:
        return Check("roles", False, "; ".join(problems))
    if not roles:
        return Check("roles", False, "the owner and runtime roles are not set up yet: run "
                                     "`altaviz db migrate`")
    etl = (f"; ETL {roles['etl']}, a member of {db.ETL_ROLE} only" if "etl" in roles
           else "; no ETL role yet: run `altaviz db migrate`")
    return Check("roles", True, f"owner {roles['owner']}, runtime {roles['runtime']}, both "
                                f"members of {db.APP_ROLE}{etl}")


def _rls_check(conn: Any) -> Check:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relrowsecurity "
        "AND NOT c.relforcerowsecurity AND NOT c.relispartition ORDER BY 1").fetchall()
    if rows:
        names = ", ".join(r[0] for r in rows)
        return Check("row-level security", False,
                     f"not forced on {names}: run `altaviz db migrate` (or ALTER TABLE ... "
                     "FORCE ROW LEVEL SECURITY as the owner)")
    count = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relforcerowsecurity").fetchone()
    return Check("row-level security", True, f"forced on {count[0] if count else 0} tables")


def _first_line(exc: Exception) -> str:
    """The server's refusal in one line (its first), for a check's detail."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _runtime_login_check(runtime_url: str) -> Check:
    """The runtime login really enters a tenant (what every worker and web request does)."""
    try:
        with db.connect(runtime_url) as conn, db.tenant(conn, "doctor-check"):
            conn.execute("SELECT count(*) FROM compressors").fetchone()
    except AltavizError as exc:
        return Check("runtime login", False, f"{exc}")
    except Exception as exc:  # the server's refusal, e.g. permission denied to set role
        message = _first_line(exc)
        return Check("runtime login", False, f"{mask_url(runtime_url)} cannot enter a tenant: "
                     f"{message}; run `altaviz db migrate` as the owner (it grants "
                     f"{db.APP_ROLE} to the runtime role)")
    return Check("runtime login", True, f"{mask_url(runtime_url)} enters a tenant")


def _etl_login_check(etl_url: str | None) -> Check:
    """The ETL login is neither owner nor superuser and enters a tenant as the ETL's tenant
    role (what the ETL's per-organization writes do)."""
    if etl_url is None:
        return Check("ETL login", True, "ALTAVIZ_ETL_DATABASE_URL is unset: the ETL logs in "
                     "as the schema owner; set it to the ETL login <database>_etl, which "
                     "cannot alter the schema (docs/OPERATIONS.md, \"Database roles\")")
    try:
        with db.connect(etl_url) as conn:
            who = db.login_powers(conn)
            if who.powers:
                return Check("ETL login", False, f"{mask_url(etl_url)} logs in as {who.name}, "
                             f"which {' and '.join(who.powers)}: set ALTAVIZ_ETL_DATABASE_URL "
                             f"to the ETL login <database>_etl")
            with db.tenant(conn, "doctor-check", role=db.ETL_ROLE):
                conn.execute("SELECT count(*) FROM etl_watermarks").fetchone()
    except AltavizError as exc:
        return Check("ETL login", False, f"{exc}")
    except Exception as exc:  # the server's refusal, e.g. permission denied to set role
        message = _first_line(exc)
        return Check("ETL login", False, f"{mask_url(etl_url)} cannot enter a tenant as "
                     f"{db.ETL_ROLE}: {message}; run `altaviz db migrate` as the owner (it "
                     f"creates the ETL login and grants it {db.ETL_ROLE})")
    return Check("ETL login", True, f"{mask_url(etl_url)} logs in as {who.name}, neither owner "
                 f"nor superuser, and enters a tenant as {db.ETL_ROLE}")


# --- Temporal ---------------------------------------------------------------------------------

async def temporal_checks(app: App, *, service: bool) -> list[Check]:
    """Reachable, namespace, search attributes, and (``service``) task queues polled."""
    s = app.settings
    try:
        address = app.temporal_address()
        # a client of its own: the app's is kept for the event loop the service runs on
        client = await asyncio.wait_for(temporal_connect(s, address), CHECK_TIMEOUT)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=s.temporal_namespace),
            timeout=timedelta(seconds=CHECK_TIMEOUT))
    except Exception as exc:
        return [Check("temporal", False, f"cannot reach namespace {s.temporal_namespace!r} at "
                      f"{s.temporal_address or 'the embedded server'}: {_reason(exc)}; check "
                      "ALTAVIZ_TEMPORAL_ADDRESS, ALTAVIZ_TEMPORAL_NAMESPACE and TLS settings "
                      "(or create it: `temporal operator namespace create`)")]
    out = [Check("temporal", True, f"{address}, namespace {s.temporal_namespace!r}")]
    out.append(await _search_attributes_check(client, s.temporal_namespace))
    if service:
        for queue, kind in ((s.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                            (s.etl_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)):
            out.append(await _poll_check(client, s.temporal_namespace, queue, kind))
    return out


async def _search_attributes_check(client: Client, namespace: str) -> Check:
    try:
        found = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace),
            timeout=timedelta(seconds=CHECK_TIMEOUT))
    except Exception as exc:
        return Check("search attributes", False, f"cannot list them: {_reason(exc)}")
    known = set(found.custom_attributes) | set(found.system_attributes)
    missing = [n for n in SEARCH_ATTRIBUTES if n not in known]
    if missing:
        names = " ".join(f"--name {n} --type {SEARCH_ATTRIBUTES[n]}" for n in missing)
        return Check("search attributes", False,
                     f"missing {', '.join(missing)}: start `altaviz worker` once (it registers "
                     f"them) or run `temporal operator search-attribute create {names}`")
    return Check("search attributes", True, f"{len(SEARCH_ATTRIBUTES)} registered")


async def _poll_check(client: Client, namespace: str, queue: str, kind: int) -> Check:
    label = "workflows" if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else "ETL stages"
    try:
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=namespace, task_queue=TaskQueue(name=queue),
                                     task_queue_type=kind),  # type: ignore[arg-type]
            timeout=timedelta(seconds=CHECK_TIMEOUT))
    except Exception as exc:
        return Check(f"task queue {queue}", False, f"cannot describe it: {_reason(exc)}")
    if not resp.pollers:
        return Check(f"task queue {queue}", False,
                     f"no worker polls it ({label}): start `altaviz up` or `altaviz worker`")
    return Check(f"task queue {queue}", True, f"{len(resp.pollers)} poller(s) ({label})")


# --- secret, public URL, contacts -------------------------------------------------------------

def link_secret_check(settings: Settings) -> Check:
    """The link secret is set, long and unpredictable enough."""
    if settings.link_secret is None:
        return Check("link secret", False, "ALTAVIZ_LINK_SECRET is not set: set it to 32 random "
                                           "bytes, e.g. `openssl rand -hex 32`")
    try:
        check_secret(settings.link_secret.get_secret_value().encode(), "ALTAVIZ_LINK_SECRET")
    except AltavizError as exc:
        return Check("link secret", False, f"{exc}")
    return Check("link secret", True, "set, long and unpredictable")


def public_url_check(settings: Settings, timeout: float = 5.0) -> Check:
    """The links' base URL answers ``/healthz`` from this server."""
    url = settings.base_url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return Check("public URL", False, f"{url} is not reachable from this server "
                     f"({_reason(exc)}): is `altaviz up` running, and is ALTAVIZ_PUBLIC_URL "
                     "the address technicians' phones reach?")
    if status in (200, 503):  # 503: the server answers but reports a dependency down
        return Check("public URL", True, f"{url} answers ({status})")
    return Check("public URL", False, f"{url} answered {status}: ALTAVIZ_PUBLIC_URL points at "
                                      "something other than the acknowledgement server")


def contact_checks(app: App, *, database: bool) -> list[Check]:
    """The contacts file parses, and each stored contact's channels are valid Apprise URLs."""
    out: list[Check] = []
    path = app.settings.contacts_file
    if path is not None:
        try:
            n = len(read_contacts(path).contacts)
            out.append(Check("contacts file", True, f"{path}: {n} contacts"))
        except AltavizError as exc:
            out.append(Check("contacts file", False, f"{exc}"))
    if not database:
        return out
    try:
        with _owner(app) as conn:
            rows = conn.execute("SELECT org_id, contact_id, apprise_urls FROM contacts "
                                "WHERE active ORDER BY 1, 2").fetchall()
    except Exception as exc:
        out.append(Check("contacts", False, f"cannot read them: {_reason(exc)}"))
        return out
    if not rows:
        out.append(Check("contacts", False, "none loaded: nobody would be told of an alert; "
                                            "load them with `altaviz contacts load FILE`"))
    apprise = load_apprise()
    for org, contact, urls in rows:
        bad, unset = [], []
        for i, u in enumerate(urls, 1):
            try:
                if not apprise.Apprise().add(expand_secrets(u)):
                    bad.append(f"#{i} ({url_scheme(u)}://...)")
            except InputError as exc:
                unset.append(f"#{i}: {exc}")
        schemes = ", ".join(url_scheme(u) for u in urls)
        if unset:
            out.append(Check(f"contact {org}/{contact}", False,
                             f"{'; '.join(unset)} here: set it where the workers run (and "
                             "here, to check)"))
        elif bad:
            out.append(Check(f"contact {org}/{contact}", False,
                             f"channel {', '.join(bad)} is not a valid Apprise URL: fix it in "
                             "the contacts file and load it again"))
        else:
            out.append(Check(f"contact {org}/{contact}", True, f"{len(urls)} channel(s): "
                                                                f"{schemes}"))
    return out


def send_test(app: App, who: str) -> list[Check]:
    """Send a test notification to one contact on each of its channels."""
    org, _, contact = who.rpartition("/")
    with _owner(app) as conn:
        rows = conn.execute(
            "SELECT org_id, contact_id, apprise_urls FROM contacts WHERE contact_id = %s "
            "AND (%s = '' OR org_id = %s)", [contact, org, org]).fetchall()
    if not rows:
        raise InputError(f"no contact {who!r}")
    if len(rows) > 1:
        raise InputError(f"contact {contact!r} exists in {', '.join(r[0] for r in rows)}: "
                         "name it as ORG/CONTACT")
    org, contact, urls = rows[0]
    apprise = load_apprise()
    out = []
    for i, url in enumerate(urls, 1):
        ap = apprise.Apprise()
        try:
            url = expand_secrets(url)
        except InputError as exc:
            out.append(Check(f"test to {org}/{contact} #{i} ({url_scheme(url)})", False,
                             str(exc)))
            continue
        ok = bool(ap.add(url)) and bool(ap.notify(
            title="Altaviz test notification",
            body=f"Test from `altaviz doctor` for {org}/{contact}: this channel works.",
            body_format=apprise.NotifyFormat.TEXT))
        out.append(Check(f"test to {org}/{contact} #{i} ({url_scheme(url)})", ok,
                         "sent" if ok else "not delivered: run with ALTAVIZ_LOG_LEVEL=DEBUG "
                                           "for Apprise's reason, then fix the URL"))
    return out


def _owner_url(app: App) -> str:
    """The owner's URL without migrating (and, for a configured server, without caching it
    in the app, whose first ``owner_database_url()`` applies the pending migrations)."""
    s = app.settings
    return s.database_owner_url or s.database_url or app.owner_database_url(migrate=False)


@contextmanager
def _owner(app: App) -> Iterator[Any]:
    with db.connect(_owner_url(app), autocommit=True) as conn:
        yield conn


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def preflight(app: App, *, web: bool, write: Callable[[str], None] = print) -> None:
    """The checks ``altaviz up`` runs before writing anything (no running service needed).

    Raises:
        ServiceError: one or more failed; each is written (with its fix) first.
    """
    checks: list[Check] = []
    if not app.embedded_postgres:  # the embedded server is set up by Altaviz itself
        # pending migrations are `up`'s own first step: only a real problem counts here
        checks = [c for c in database_checks(app)
                  if not (c.name == "migrations" and "pending" in c.detail)
                  and not (c.name == "roles" and "not set up yet" in c.detail)]
    checks += asyncio.run(temporal_checks(app, service=False))
    checks = [c for c in checks if c.name != "search attributes"]  # the worker registers them
    if web:
        checks.append(link_secret_check(app.settings))
    if app.settings.contacts_file is not None:
        checks += [c for c in contact_checks(app, database=False)]
    failed = [c for c in checks if not c.ok]
    for c in failed:
        write(c.line())
    if failed:
        raise ServiceError(f"{len(failed)} check(s) failed; nothing was written (see above, "
                           "or run `altaviz doctor`)")
