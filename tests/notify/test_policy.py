"""The escalation policy file: defaults, per-organization entries, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.notify import roles_for
from altaviz.core.errors import InputError
from altaviz.core.payloads import AlertState, NotifyRequest
from altaviz.core.policy import read_policy
from tests.notify.conftest import BREACH_HOUR


def _req(severity: str, event: str, audience: str = "technicians") -> NotifyRequest:
    alert = AlertState(alert_id="a", workflow_id="w", org_id="acme", compressor_id="C",
                       site_id="S", rule_id="r", metric="m", value=1.0, threshold=0.5,
                       severity=severity, breach_hour=BREACH_HOUR, opened_at=BREACH_HOUR)
    return NotifyRequest(alert=alert, step=event, audience=audience, event=event)


def test_default_policy_sends_critical_openings_and_reminders_to_supervisors() -> None:
    policy = read_policy(None)
    assert roles_for(_req("critical", "opened"), policy) == ["technician", "supervisor"]
    assert roles_for(_req("warning", "opened"), policy) == ["technician"]
    assert roles_for(_req("critical", "reminder"), policy) == ["technician", "supervisor"]
    assert policy.for_org("acme").chain == ("technician", "supervisor", "manager")


def test_an_organization_entry_overrides_the_default(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("organizations:\n  acme:\n    at_open: {critical: [technician]}\n"
                    "    fallback_contact: ops-desk\n")
    policy = read_policy(path)
    assert roles_for(_req("critical", "opened"), policy) == ["technician"]
    assert policy.for_org("acme").fallback_contact == "ops-desk"
    assert policy.for_org("bravo").fallback_contact is None


@pytest.mark.parametrize(("text", "message"), [
    ("organizations:\n  acme:\n    at_open: {critical: [janitor]}\n",
     "organizations.acme.at_open.critical.0"),
    ("default:\n  reminder_minuts: 5\n", "default.reminder_minuts: Extra inputs"),
    ("default:\n  chain: [technician, technician]\n", "list each role once"),
    ("- a list\n", "expected a mapping"),
    ("default: [\n", "not valid YAML"),
])
def test_mistakes_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_policy(path)
    assert str(path) in str(err.value) and message in str(err.value)
