"""No secret in any output: CLI commands run as real subprocesses with a database password and a
link secret in their environment, with ``--debug`` (tracebacks and DEBUG logging on), on success
and on failure paths. Neither the password nor the link secret may appear on stdout or stderr.
(The web server's logs are covered by tests/web.)"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.reliability.conftest import clean_env, free_port

PASSWORD = "Pw-d0nt-l3ak-7f3a9c"
SECRET = "ls-d0nt-l3ak-9c41e07b5fd2a8836e1b40c9d7f25a3e"
SHORT_SECRET = "short-s3cr3t"


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port}" if parts.hostname else ""  # socket in ?host=
    netloc = f"{parts.username}:{PASSWORD}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _altaviz(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "altaviz.app.cli", "--debug", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _cases(db_url: str, tmp: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    good = _with_password(db_url)
    dead = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nope"
    base = {"ALTAVIZ_DATA_DIR": str(tmp / "data"), "ALTAVIZ_LINK_SECRET": SECRET,
            "ALTAVIZ_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "ALTAVIZ_LOG_LEVEL": "DEBUG"}
    return [
        ("db status", ["db", "status"], {**base, "ALTAVIZ_DATABASE_URL": good}),
        ("db status, server down", ["db", "status"], {**base, "ALTAVIZ_DATABASE_URL": dead}),
        ("alerts list", ["alerts", "list", "--org", "x"], {**base, "ALTAVIZ_DATABASE_URL": good}),
        ("alerts list, server down", ["alerts", "list", "--org", "acme"],
         {**base, "ALTAVIZ_DATABASE_URL": dead}),
        ("etl run, server down", ["etl", "run", "--quiet"],
         {**base, "ALTAVIZ_DATABASE_URL": dead}),
        ("serve refuses a short secret", ["serve", "--port", str(free_port())],
         {**base, "ALTAVIZ_DATABASE_URL": good, "ALTAVIZ_LINK_SECRET": SHORT_SECRET}),
        ("invalid database URL setting", ["db", "status"],
         {**base, "ALTAVIZ_DATABASE_URL": f"mysql://root:{PASSWORD}@db/x"}),
        ("invalid other setting", ["db", "status"],
         {**base, "ALTAVIZ_DATABASE_URL": good, "ALTAVIZ_HTTP_PORT": "not-a-port"}),
    ]


def test_cli_never_prints_the_password_or_the_link_secret(
        db_url: str, tmp_path: Path) -> None:
    cases = _cases(db_url, tmp_path)

    def run(i: int) -> subprocess.CompletedProcess[str]:
        # each command gets a data directory of its own, so they can run side by side
        _, args, extra = cases[i]
        return _altaviz(args, clean_env(**{**extra, "ALTAVIZ_DATA_DIR": str(tmp_path / f"d{i}")}),
                        tmp_path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(run, range(len(cases))))
    outcomes = []
    for (label, _, _), proc in zip(cases, procs, strict=True):
        out = proc.stdout + proc.stderr
        outcomes.append((label, proc.returncode))
        for secret in (PASSWORD, SECRET, SHORT_SECRET):
            assert secret not in out, f"{label}: secret printed:\n{out[-3000:]}"
    codes = dict(outcomes)
    # the commands really ran: successes succeed, failures fail (not a blanket crash)
    # ("alerts list" names an organization that does not exist: a one-line refusal, exit 1)
    assert codes["db status"] == 0
    assert all(codes[k] != 0 for k in codes if k != "db status")


@pytest.mark.parametrize("field", ["database_url", "link_secret"])
def test_settings_repr_and_errors_hide_secrets(field: str, tmp_path: Path) -> None:
    from altaviz.core.errors import ConfigError
    from altaviz.core.settings import Settings, load_settings

    s = Settings(data_dir=tmp_path, database_url=f"postgresql://u:{PASSWORD}@h/db",
                 link_secret=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())
    env = {"ALTAVIZ_DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"} if field == "database_url" \
        else {"ALTAVIZ_LINK_SECRET": SECRET, "ALTAVIZ_LINK_TTL_HOURS": "-1"}
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with pytest.raises(ConfigError) as info:
            load_settings(None)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert PASSWORD not in str(info.value) and SECRET not in str(info.value)
