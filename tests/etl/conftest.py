"""Fixtures of the ETL tests: settings pointing at a temporary lake and landing folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from altaviz.core.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with the lake and landing folders under ``tmp_path``."""
    return Settings(data_dir=tmp_path, landing_dir=tmp_path / "landing",
                    lake_dir=tmp_path / "lake", late_arrival_minutes=240)
