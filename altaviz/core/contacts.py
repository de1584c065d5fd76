"""Contacts and routing: who is told about which compressor's alerts, and how.

The routing file (YAML) lists each organization's contacts with a role (technician, supervisor
or manager: the levels of the escalation chain, see :mod:`altaviz.core.policy`), the sites
they cover (none listed: every site) and one or more Apprise URLs. Loading it stores the
contacts in PostgreSQL, where the notify activity reads them; a contact that disappears from
the file is deactivated, not deleted, because the delivery log (``notifications``) keeps
referring to it.

Example::

    contacts:
      - org_id: acme
        contact_id: jo-rivera
        name: Jo Rivera
        role: technician
        sites: [PB-01]
        apprise_urls:
          - mailtos://alerts:${SMTP_PASSWORD}@smtp.example.com?to=jo@example.com
          - sns://...            # SMS (gets the short form)

Apprise URLs often embed credentials, so no error message or log line here prints one: a URL
is referred to by its position and scheme only. Keep secrets out of the file: ``${NAME}`` in a
URL is replaced, at delivery, by the worker's environment variable ``NAME``
(:func:`expand_secrets`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import quote

import psycopg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from altaviz.core.db import queries, tenant
from altaviz.core.errors import InputError

Role = Literal["technician", "supervisor", "manager"]


@cache
def load_apprise() -> ModuleType:
    """Apprise with its plugins loaded once, up front.

    Apprise loads every plugin on first use, and its e-mail plugin imports the stdlib module
    ``imghdr``, deprecated since Python 3.11; loading here with that one warning silenced keeps
    the first notification (and any test run with warnings as errors) from tripping on it.
    """
    import apprise

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*imghdr.*")
        apprise.Apprise().add("json://localhost")
        import apprise.plugins.email
    return apprise


_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_secrets(url: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL with each ``${NAME}`` replaced by the environment variable ``NAME``.

    The contacts file and the database keep the reference; only the worker that delivers
    reads the secret (an SMTP password, an API token), from its own environment.

    Raises:
        InputError: a referenced variable is not set (named; the URL is not shown).
    """
    env = os.environ if environ is None else environ

    def value(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise InputError(f"environment variable {m.group(1)} (referenced by a "
                             f"{url_scheme(url)}:// URL) is not set")
        return quote(env[m.group(1)], safe="")

    return _SECRET_REF.sub(value, url)


def url_scheme(url: str) -> str:
    """The scheme of an Apprise URL (``mailto``, ``json``, ``sns``...), lower case; never more.

    This is all of a URL that may be stored or shown (``notifications.channel``).
    """
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and scheme.replace("+", "").isalnum() else "unknown"


class Contact(BaseModel):
    """One person (or team address) who receives notifications."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    org_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    contact_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
    name: str = Field(min_length=1, max_length=200)
    role: Role
    sites: tuple[str, ...] = ()
    apprise_urls: tuple[str, ...] = Field(min_length=1)
    active: bool = True

    @field_validator("apprise_urls")
    @classmethod
    def _valid_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        apprise = load_apprise()
        for i, url in enumerate(urls, start=1):
            # Apprise.add returns False (it does not raise) for a URL it cannot use.
            if not isinstance(url, str) or not apprise.Apprise().add(url):
                raise ValueError(f"URL #{i} ({url_scheme(str(url))}://...) is not a valid "
                                 "Apprise URL (see https://appriseit.com/services/)")
        return urls

    def __repr_args__(self) -> Any:  # keep URLs (and their credentials) out of reprs
        for key, value in super().__repr_args__():
            if key == "apprise_urls":
                yield key, tuple(f"{url_scheme(u)}://..." for u in value)
            else:
                yield key, value


class ContactsFile(BaseModel):
    """Everything in a contacts/routing file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contacts: tuple[Contact, ...]


def read_contacts(path: Path) -> ContactsFile:
    """Read and validate a contacts file.

    Raises:
        InputError: unreadable, not YAML, an invalid contact (named with its key path), or a
            contact id used twice in one organization.
    """
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read contacts file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"contacts file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping with a 'contacts' list")
    try:
        parsed = ContactsFile.model_validate(loaded)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        where = _describe_loc(loaded, loc)
        raise InputError(f"{path}: {where}: {first['msg']} "
                         f"({exc.error_count()} problem(s) in all)") from None
    seen: set[tuple[str, str]] = set()
    for c in parsed.contacts:
        key = (c.org_id, c.contact_id)
        if key in seen:
            raise InputError(f"{path}: contact {c.contact_id!r} of {c.org_id!r} is listed twice")
        seen.add(key)
    return parsed


def _describe_loc(loaded: dict[str, Any], loc: list[Any]) -> str:
    if len(loc) >= 2 and loc[0] == "contacts" and isinstance(loc[1], int):
        entries = loaded.get("contacts") or []
        name = f"#{loc[1] + 1}"
        if loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            cid = entries[loc[1]].get("contact_id")
            if cid:
                name = repr(str(cid))
        rest = ".".join(str(p) for p in loc[2:] if not isinstance(p, int) or p > 100)
        return f"contact {name}" + (f": {rest}" if rest else "")
    return ".".join(str(p) for p in loc) or "file"


def load_contacts(conn: psycopg.Connection[Any], contacts: ContactsFile) -> dict[str, int]:
    """Store the contacts, one tenant transaction per organization; return counts.

    Upserts every listed contact and deactivates the organization's contacts the file no longer
    lists. Every site named must exist in the organization.

    Raises:
        InputError: an unknown organization or site (nothing of that organization is changed).
    """
    q = queries("notify")
    by_org: dict[str, list[Contact]] = defaultdict(list)
    for c in contacts.contacts:
        by_org[c.org_id].append(c)
    counts = {"organizations": 0, "contacts": 0, "deactivated": 0}
    for org_id, members in sorted(by_org.items()):
        with tenant(conn, org_id), conn.cursor() as cur:
            org = cur.execute(q["org_exists"]).fetchone()
            if org is None:
                raise InputError(f"contacts of organization {org_id!r}: no such organization "
                                 "(load the fleet first: altaviz fleet load)")
            known = {r[0] for r in cur.execute(q["site_ids"])}
            for c in members:
                unknown = sorted(set(c.sites) - known)
                if unknown:
                    raise InputError(f"contact {c.contact_id!r} of {org_id!r}: unknown site(s) "
                                     f"{', '.join(unknown)}")
            cur.executemany(q["upsert_contact"], [
                {"org_id": c.org_id, "contact_id": c.contact_id, "name": c.name,
                 "role": c.role, "site_ids": list(c.sites), "apprise_urls": list(c.apprise_urls),
                 "active": c.active} for c in members])
            cur.execute(q["deactivate_missing_contacts"],
                        {"keep": [c.contact_id for c in members]})
            counts["deactivated"] += cur.rowcount
        counts["organizations"] += 1
        counts["contacts"] += len(members)
    return counts
