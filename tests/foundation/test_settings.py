"""Settings: one model, ALTAVIZ_* variables and a --config file, clear one-line errors."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from altaviz.core.errors import ConfigError
from altaviz.core.settings import Settings, load_settings


def test_defaults_and_environment() -> None:
    s = load_settings(environ={"ALTAVIZ_HTTP_PORT": "9000", "ALTAVIZ_LOG_LEVEL": "debug"})
    assert s.http_port == 9000 and s.log_level == "DEBUG"
    assert s.database_url is None and s.temporal_address is None
    assert s.base_url == "http://127.0.0.1:9000"


def test_every_setting_has_one_environment_variable() -> None:
    from altaviz.core.settings import ENV_HELP, env_name

    for name in Settings.model_fields:
        assert env_name(name) in ENV_HELP
    for required in ("DATA_DIR", "DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE",
                     "PUBLIC_URL", "LINK_SECRET"):
        assert f"ALTAVIZ_{required}" in ENV_HELP


def test_config_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "altaviz.yaml"
    cfg.write_text("http_port: 9100\ntemporal_namespace: fleet\n")
    s = load_settings(cfg, environ={"ALTAVIZ_HTTP_PORT": "9200"})
    assert s.http_port == 9200 and s.temporal_namespace == "fleet"


def test_invalid_values_name_setting_value_and_source(tmp_path: Path) -> None:
    cfg = tmp_path / "altaviz.yaml"
    cfg.write_text("log_level: loud\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={"ALTAVIZ_HTTP_PORT": "eighty"})
    msg = str(err.value)
    assert "ALTAVIZ_LOG_LEVEL='loud' (from config file" in msg
    assert "ALTAVIZ_HTTP_PORT='eighty' (from environment variable ALTAVIZ_HTTP_PORT)" in msg


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "altaviz.yaml"
    cfg.write_text("databse_url: postgresql://x\n")
    with pytest.raises(ConfigError, match="unknown setting 'databse_url'"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="ALTAVIZ_TEMPORAL_ADRESS"):
        load_settings(environ={"ALTAVIZ_TEMPORAL_ADRESS": "x:1"})


def test_secrets_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"ALTAVIZ_DATABASE_URL": "mysql://u:hunter2@h/db",
                               "ALTAVIZ_LINK_SECRET": ""})
    assert "hunter2" not in str(err.value)
    s = load_settings(environ={"ALTAVIZ_LINK_SECRET": "s3cret-value"})
    assert "s3cret-value" not in repr(s)


def _altaviz(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "altaviz.app.cli", *args], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **env}, cwd=cwd, timeout=60)


@pytest.mark.parametrize(("env", "expected"), [
    ({"ALTAVIZ_LOG_LEVEL": "loud"}, "ALTAVIZ_LOG_LEVEL='loud'"),
    ({"ALTAVIZ_HTTP_PORT": "abc"}, "ALTAVIZ_HTTP_PORT='abc'"),
    ({"ALTAVIZ_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:1/none"},
     "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/none"),
])
def test_cli_bad_settings_one_line_no_traceback(
    env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    result = _altaviz(["db", "status"], env, tmp_path)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("altaviz: error:")
    assert "pw@" not in result.stderr


def test_a_retired_setting_warns_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade that still sets a setting of an earlier release starts, with a warning that
    says what replaced it; an unknown variable still fails."""
    with caplog.at_level(logging.WARNING, logger="altaviz.core.settings"):
        settings = load_settings(environ={"ALTAVIZ_RULES_CONNECTIONS": "2",
                                          "ALTAVIZ_ETL_CHILD_PROCESS_ROWS": "1000",
                                          "ALTAVIZ_FRESHNESS_SLA_MINUTES": "15"})
    assert settings.rules_threads >= 1
    assert "ALTAVIZ_FRESHNESS_SLA_MINUTES is retired" in caplog.text
    assert settings.freshness_grace_minutes == 30
    assert "ALTAVIZ_RULES_CONNECTIONS is retired" in caplog.text
    assert "ALTAVIZ_ETL_CHILD_PROCESS_ROWS is retired" in caplog.text
    with pytest.raises(ConfigError, match="unknown environment variable ALTAVIZ_RULES_CONNECTION"):
        load_settings(environ={"ALTAVIZ_RULES_CONNECTION": "2"})
