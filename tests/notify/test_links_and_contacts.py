"""Signed links (issue/verify, every way a link can be bad) and the contacts file loader."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core.contacts import load_contacts, read_contacts
from altaviz.core.errors import ConfigError, InputError
from altaviz.core.links import (
    LinkError,
    LinkSigner,
    check_secret,
    key_id,
    load_secret,
    signer_from_settings,
)
from altaviz.core.settings import Settings
from tests.notify.conftest import SECRET


def _alter(token: str, **changes: Any) -> str:
    *head, payload, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
    return ".".join([*head, new.rstrip(b"=").decode(), sig])


def test_roundtrip_binds_org_alert_recipient_action() -> None:
    s = LinkSigner(SECRET)
    token = s.issue(org_id="acme", alert_id="alert/acme/C1/r:1", contact_id="tech-a",
                    action="ack")
    c = s.verify(token, action="ack")
    assert (c.org_id, c.alert_id, c.contact_id, c.action) == (
        "acme", "alert/acme/C1/r:1", "tech-a", "ack")
    assert c.request_id == f"link-{c.token_id}"
    # every token is distinct, so single use is per link
    assert s.issue(org_id="acme", alert_id="a", contact_id="t", action="ack") != \
        s.issue(org_id="acme", alert_id="a", contact_id="t", action="ack")


@pytest.mark.parametrize("change", [{"a": "alert/acme/C2/r:1"}, {"r": "tech-z"},
                                    {"o": "bravo"}, {"x": "view"}, {"e": 4102444800}])
def test_any_altered_field_is_forged(change: dict[str, Any]) -> None:
    s = LinkSigner(SECRET)
    token = s.issue(org_id="acme", alert_id="alert/acme/C1/r:1", contact_id="tech-a",
                    action="ack")
    with pytest.raises(LinkError) as err:
        s.verify(_alter(token, **change), action=change.get("x", "ack"))
    assert err.value.problem == "forged"


def test_other_secret_expired_wrong_action_and_garbage() -> None:
    s = LinkSigner(SECRET)
    other = LinkSigner(b"another-secret-entirely-5f0c9a2e7b1d")
    token = other.issue(org_id="acme", alert_id="a", contact_id="t", action="ack")
    with pytest.raises(LinkError, match="not issued by this server") as e1:
        s.verify(token, action="ack")
    assert e1.value.problem == "forged"
    old = s.issue(org_id="acme", alert_id="a", contact_id="t", action="ack",
                  now=datetime.now(UTC) - timedelta(days=10))
    with pytest.raises(LinkError, match="expired") as e2:
        s.verify(old, action="ack")
    assert e2.value.problem == "expired"
    view = s.issue(org_id="acme", alert_id="a", contact_id="t", action="view")
    with pytest.raises(LinkError) as e3:
        s.verify(view, action="ack")
    assert e3.value.problem == "wrong_action"
    for junk in ["", "abc", "v1.x.y", "v2.a.b", "v2.a.b.c", "v1..", "v2...", "v1.!!!.???",
                 "v3.a.b.c"]:
        with pytest.raises(LinkError):
            s.verify(junk, action="ack")


def test_secret_required_outside_demo_and_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ALTAVIZ_LINK_SECRET is not set"):
        load_secret(Settings(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="ALTAVIZ_LINK_SECRET must be at least 32"):
        load_secret(Settings(data_dir=tmp_path, link_secret="short"))
    demo1 = load_secret(Settings(data_dir=tmp_path), demo=True)
    assert demo1 == load_secret(Settings(data_dir=tmp_path), demo=True)  # shared via file
    assert (tmp_path / "link_secret").stat().st_mode & 0o077 == 0
    assert SECRET.decode() not in repr(LinkSigner(SECRET))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "contacts.yaml"
    p.write_text(text)
    return p


GOOD = """
contacts:
  - org_id: acme
    contact_id: tech-a
    name: Jo Rivera
    role: technician
    sites: [PB-01]
    apprise_urls: ["json://127.0.0.1:9/acme/tech-a",
                   "mailto://alerts:TopSecretPw@smtp.example.com?to=jo@example.com"]
  - org_id: acme
    contact_id: sup-a
    name: Sam Okafor
    role: supervisor
    apprise_urls: ["json://127.0.0.1:9/acme/sup-a"]
"""


def test_load_contacts_upserts_and_deactivates(conn: psycopg.Connection[Any], fleet: Any,
                                               tmp_path: Path) -> None:
    counts = load_contacts(conn, read_contacts(_write(tmp_path, GOOD)))
    assert counts == {"organizations": 1, "contacts": 2, "deactivated": 0}
    rows = conn.execute("SELECT contact_id, role, site_ids, active FROM contacts "
                        "ORDER BY contact_id").fetchall()
    assert rows == [("sup-a", "supervisor", [], True), ("tech-a", "technician", ["PB-01"], True)]
    only_tech = GOOD.split("  - org_id: acme\n    contact_id: sup-a")[0]
    counts = load_contacts(conn, read_contacts(_write(tmp_path, only_tech)))
    assert counts["deactivated"] == 1
    assert conn.execute("SELECT active FROM contacts WHERE contact_id='sup-a'").fetchone() == (
        False,)


def test_contact_file_errors_name_the_contact_and_hide_urls(conn: psycopg.Connection[Any],
                                                            fleet: Any, tmp_path: Path) -> None:
    bad_url = GOOD.replace("json://127.0.0.1:9/acme/sup-a", "nosuchscheme://user:Pw123@host")
    with pytest.raises(InputError) as err:
        read_contacts(_write(tmp_path, bad_url))
    assert "'sup-a'" in str(err.value) and "nosuchscheme://..." in str(err.value)
    assert "Pw123" not in str(err.value)
    with pytest.raises(InputError, match="rol"):
        read_contacts(_write(tmp_path, GOOD.replace("role: supervisor", "rol: supervisor")))
    with pytest.raises(InputError, match="listed twice"):
        read_contacts(_write(tmp_path, GOOD.replace("sup-a", "tech-a")))
    with pytest.raises(InputError, match="unknown site"):
        load_contacts(conn, read_contacts(_write(tmp_path, GOOD.replace("[PB-01]", "[XX-9]"))))
    with pytest.raises(InputError, match="no such organization"):
        load_contacts(conn, read_contacts(_write(tmp_path, GOOD.replace("acme", "zulu"))))
    assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (0,)


@pytest.mark.parametrize("value", ["a" * 16, "a" * 64, "0123456789abcdef" * 2,
                                   "ab" * 32, "passwordpasswordpasswordpassword"])
def test_low_entropy_secrets_are_refused_naming_the_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"ALTAVIZ_LINK_SECRET (must be|is not random)"):
        load_secret(Settings(data_dir=tmp_path, link_secret=value))
    with pytest.raises(ConfigError, match="ALTAVIZ_LINK_SECRET_PREVIOUS"):
        signer_from_settings(Settings(data_dir=tmp_path, link_secret=SECRET.decode(),
                                      link_secret_previous=value))
    with pytest.raises(ConfigError):
        LinkSigner(value.encode())


def test_generated_secrets_are_accepted(tmp_path: Path) -> None:
    for _ in range(200):
        check_secret(secrets.token_hex(32).encode())
        check_secret(secrets.token_urlsafe(32).encode())
    demo = signer_from_settings(Settings(data_dir=tmp_path), demo=True)  # the demo's own key
    token = demo.issue(org_id="acme", alert_id="a", contact_id="t", action="ack")
    assert signer_from_settings(Settings(data_dir=tmp_path), demo=True).verify(
        token, action="ack").org_id == "acme"


def test_rotation_keeps_old_links_until_expiry_and_signs_new_ones_with_the_new_key(
        tmp_path: Path) -> None:
    old_key, new_key = secrets.token_hex(32), secrets.token_hex(32)
    before = signer_from_settings(Settings(data_dir=tmp_path, link_secret=old_key))
    sent = before.issue(org_id="acme", alert_id="a", contact_id="t", action="ack")
    sent_expiring = before.issue(org_id="acme", alert_id="a", contact_id="t", action="ack",
                                 now=datetime.now(UTC) - timedelta(hours=71))
    assert sent.split(".")[:2] == ["v2", key_id(old_key.encode())]

    # the documented rotation: the new key current, the old one previous
    after = signer_from_settings(Settings(data_dir=tmp_path, link_secret=new_key,
                                          link_secret_previous=old_key))
    assert after.verify(sent, action="ack").alert_id == "a"
    new = after.issue(org_id="acme", alert_id="a", contact_id="t", action="ack")
    assert new.split(".")[1] == key_id(new_key.encode()) == after.key_id != before.key_id
    with pytest.raises(LinkError) as err:
        before.verify(new, action="ack")  # a server not yet given the new key
    assert err.value.problem == "forged"
    # an old link still expires on time
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(LinkError) as err:
        after.verify(sent_expiring, action="ack", now=later)
    assert err.value.problem == "expired"
    # once the previous key is removed, its links stop working
    done = signer_from_settings(Settings(data_dir=tmp_path, link_secret=new_key))
    with pytest.raises(LinkError) as err:
        done.verify(sent, action="ack")
    assert err.value.problem == "forged"
    assert done.verify(new, action="ack").alert_id == "a"
    # a token may not claim another key id than the one that signed it
    v, _, payload, sig = new.split(".")
    with pytest.raises(LinkError):
        after.verify(".".join([v, key_id(old_key.encode()), payload, sig]), action="ack")
    assert old_key not in repr(after) and new_key not in repr(after)


def test_links_of_the_keyless_format_still_verify() -> None:
    s = LinkSigner(SECRET)
    payload = base64.urlsafe_b64encode(json.dumps(
        {"o": "acme", "a": "a", "r": "t", "x": "ack",
         "e": int((datetime.now(UTC) + timedelta(hours=1)).timestamp()), "n": "abc"},
        separators=(",", ":")).encode()).rstrip(b"=").decode()
    mac = hmac.new(SECRET, b"altaviz-link-v1." + payload.encode(), hashlib.sha256).digest()
    legacy = f"v1.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert s.verify(legacy, action="ack").token_id == "abc"
    with pytest.raises(LinkError):
        LinkSigner(b"another-secret-entirely-5f0c9a2e7b1d").verify(legacy, action="ack")
