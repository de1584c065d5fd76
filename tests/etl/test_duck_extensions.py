"""The DuckDB extensions are loaded from verified files only: checked against the SHA-256 pip
recorded for the pinned wheel (then DuckDB's per-LOAD signature check, 0.41 s a connection, is
skipped), or with DuckDB's own signature check where no hash was recorded."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from altaviz.core import duck
from altaviz.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _fresh_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts unverified, with its own temp dir for the postgres copy."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    duck._delta_extension.cache_clear()
    duck._postgres_extension.cache_clear()
    yield
    duck._delta_extension.cache_clear()
    duck._postgres_extension.cache_clear()


def _setting(con: object, name: str) -> object:
    row = con.execute("SELECT current_setting(?)", [name]).fetchone()  # type: ignore[attr-defined]
    return row[0]


def _loaded(con: object) -> set[str]:
    return {r[0] for r in con.execute(  # type: ignore[attr-defined]
        "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}


def _assert_both_load(unsigned_allowed: bool) -> None:
    """A connection with both extensions loaded, and whether DuckDB's per-LOAD signature
    check was skipped."""
    con = duck.connect(postgres=True)
    try:
        assert _setting(con, "allow_unsigned_extensions") is unsigned_allowed
        assert {"delta", "postgres_scanner"} <= _loaded(con)
    finally:
        con.close()


def test_verified_files_load_without_the_per_load_signature_check() -> None:
    _assert_both_load(unsigned_allowed=True)
    copy, verified = duck._postgres_extension()
    assert verified and copy.parent.stat().st_mode & 0o077 == 0


def test_without_a_recorded_hash_duckdb_checks_the_signature(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duck, "_recorded_sha256", lambda package, name: None)
    _assert_both_load(unsigned_allowed=False)


def test_a_file_that_differs_from_the_wheel_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duck, "_recorded_sha256", lambda package, name: "not-the-hash")
    with pytest.raises(ConfigError, match=r"delta\.duckdb_extension does not match the SHA-256"):
        duck.connect()


def test_a_tampered_copy_of_the_postgres_extension_is_replaced() -> None:
    copy, _ = duck._postgres_extension()
    size = copy.stat().st_size
    copy.write_bytes(b"\0" * size)          # same size: only the hash can tell
    duck._postgres_extension.cache_clear()
    again, verified = duck._postgres_extension()
    assert again == copy and verified
    assert duck._sha256(again) == duck._recorded_sha256(
        "duckdb_extension_postgres", "postgres.duckdb_extension")


def test_a_copy_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / f"altaviz-duckdb-ext-{duck.DUCKDB_VERSION}-{__import__('os').getuid()}"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by no one else"):
        duck.connect(postgres=True)
