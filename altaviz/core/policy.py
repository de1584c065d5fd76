"""Escalation policy: who hears about an alert, when, and who is told when they cannot be reached.

One YAML file (``ALTAVIZ_ESCALATION_POLICY_FILE``) holds a ``default`` policy and optional
per-organization ones; without a file every organization gets :data:`DEFAULT_POLICY`. The file
is typed by people, so unknown keys are errors (``extra="forbid"``) and every error names the
file and the key path. Example::

    default:
      at_open: {warning: [technician], critical: [technician, supervisor]}
      escalate_to: [technician, supervisor]
      reminders_to: [technician, supervisor]
      chain: [technician, supervisor, manager]
    organizations:
      acme:
        fallback_contact: ops-desk      # told when a step reaches nobody in the chain
        reminder_minutes: 30

Routing happens in the notification activities (the policy is read once at worker start-up);
the alert workflow only names the event, so a changed policy applies to the next step of every
running alert without touching its history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from altaviz.core.errors import InputError

Role = Literal["technician", "supervisor", "manager"]
Severity = Literal["warning", "critical"]

_AT_OPEN: dict[Severity, tuple[Role, ...]] = {
    "warning": ("technician",), "critical": ("technician", "supervisor")}


class OrgPolicy(BaseModel):
    """The escalation policy of one organization (every key optional, defaults below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Roles notified when an alert opens, by its severity.
    at_open: dict[Severity, tuple[Role, ...]] = Field(default_factory=lambda: dict(_AT_OPEN))
    #: Hours an open warning may stay unacknowledged before it becomes critical; None keeps
    #: the rule's own ``escalation_delay_hours`` (4 h unless the rule says otherwise).
    escalate_after_hours: float | None = Field(default=None, gt=0)
    #: Roles notified when a warning escalates or a breach raises it to critical.
    escalate_to: tuple[Role, ...] = ("technician", "supervisor")
    #: Roles reminded while a critical alert stays unacknowledged.
    reminders_to: tuple[Role, ...] = ("technician", "supervisor")
    #: Minutes between reminders; None keeps ``ALTAVIZ_REMINDER_MINUTES``; 0 turns them off.
    reminder_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    #: The escalation chain: a person who cannot be reached is replaced by the next level.
    chain: tuple[Role, ...] = ("technician", "supervisor", "manager")
    #: Contact id told when a step reaches nobody in the chain (e.g. a staffed operations desk).
    fallback_contact: str | None = Field(default=None,
                                         pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")

    @model_validator(mode="after")
    def _checks(self) -> OrgPolicy:
        if len(set(self.chain)) != len(self.chain) or not self.chain:
            raise ValueError("chain: list each role once, at least one")
        for sev, roles in self.at_open.items():
            if not roles:
                raise ValueError(f"at_open.{sev}: name at least one role")
        return self

    def roles_at_open(self, severity: str) -> tuple[Role, ...]:
        """Roles told about a new alert of this severity."""
        return self.at_open.get(severity, ("technician",))  # type: ignore[call-overload]

    def next_roles(self, role: str) -> tuple[Role, ...]:
        """The roles after ``role`` in the chain, nearest first (all of it for unknown roles)."""
        if role in self.chain:
            return self.chain[self.chain.index(role) + 1:]
        return self.chain


DEFAULT_POLICY = OrgPolicy()


class PolicyFile(BaseModel):
    """Everything in an escalation policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: OrgPolicy = DEFAULT_POLICY
    organizations: dict[str, OrgPolicy] = Field(default_factory=dict)

    def for_org(self, org_id: str) -> OrgPolicy:
        """The organization's policy, else the default one."""
        return self.organizations.get(org_id, self.default)


def read_policy(path: Path | None) -> PolicyFile:
    """Read and validate an escalation policy file (None: the built-in default).

    Raises:
        InputError: unreadable, not YAML, or invalid (the message names the key path).
    """
    if path is None:
        return PolicyFile()
    try:
        loaded: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read escalation policy {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"escalation policy {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return PolicyFile()
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping with 'default' and/or 'organizations'")
    try:
        return PolicyFile.model_validate(loaded)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise InputError(f"{path}: {where}: {first['msg']} "
                         f"({exc.error_count()} problem(s) in all)") from None
