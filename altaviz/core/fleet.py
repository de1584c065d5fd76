"""The fleet: organizations, sites and compressors, as written by the simulator (``fleet.json``)
and loaded into PostgreSQL.

These models are the one definition of a fleet file; loading validates every record first so a
bad file changes nothing.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Basin = Literal["Permian", "Eagle Ford", "Haynesville"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organization(_Record):
    """A customer organization (tenant)."""

    org_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = Field(min_length=1, max_length=200)


class Site(_Record):
    """A compressor station."""

    org_id: str
    site_id: str = Field(min_length=1, max_length=100)
    name: str
    basin: Basin
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class Compressor(_Record):
    """One compressor package: frame model, driver and ratings."""

    org_id: str
    compressor_id: str = Field(min_length=1, max_length=100)
    site_id: str
    model: str
    driver: str | None = None
    rated_hp: int = Field(gt=0)
    rated_rpm: int = Field(gt=0)
    stages: int = Field(ge=1, le=4)
    installed_on: date | None = None


class Fleet(_Record):
    """Everything in a ``fleet.json`` file."""

    organizations: tuple[Organization, ...]
    sites: tuple[Site, ...]
    compressors: tuple[Compressor, ...]
