"""The fleet: organizations, sites and compressors, as written by the simulator (``fleet.json``)
and loaded into PostgreSQL.

These models are the one definition of a fleet file; loading validates every record first so a
bad file changes nothing. Compressor models come from the model catalog: validate with
``context={"catalog": settings.catalog}`` to accept an operator's models.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from altaviz.core.catalog import Catalog, builtin_catalog
from altaviz.core.telemetry import CHANNEL_BY_NAME, MAX_STAGES

Basin = Literal["Permian", "Eagle Ford", "Haynesville"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organization(_Record):
    """A customer organization (tenant)."""

    org_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = Field(min_length=1, max_length=200)
    #: How often the organization's gateways upload their buffered readings; data freshness
    #: is judged against it (plus ALTAVIZ_FRESHNESS_GRACE_MINUTES).
    upload_cadence_minutes: int = Field(default=60, ge=1, le=1440)


class Site(_Record):
    """A compressor station."""

    org_id: str
    site_id: str = Field(min_length=1, max_length=100)
    name: str
    basin: Basin
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


def _catalog(info: ValidationInfo) -> Catalog:
    """The catalog a fleet is validated against: ``context={"catalog": ...}``, else the
    built-in one."""
    given = (info.context or {}).get("catalog")
    return given if isinstance(given, Catalog) else builtin_catalog()


def _channel(name: str) -> str:
    if name not in CHANNEL_BY_NAME:
        raise ValueError(f"unknown channel {name!r} (expected a channel of the telemetry "
                         "contract, altaviz/core/telemetry.py)")
    return name


class Compressor(_Record):
    """One compressor package: frame model, driver, ratings and the channels it carries.

    The model must be in the model catalog (:mod:`altaviz.core.catalog`); the driver, the
    ratings, the stage count and the channels default to the catalog's for that model, so a
    fleet file may give only what differs on this unit. A channel the unit does not carry is
    absent: neither missing in the data-quality checks nor watched by the rules.
    """

    org_id: str
    compressor_id: str = Field(min_length=1, max_length=100)
    site_id: str
    model: str
    driver: str | None = None
    rated_hp: int = Field(gt=0)
    rated_rpm: int = Field(gt=0)
    stages: int = Field(ge=1, le=MAX_STAGES)
    installed_on: date | None = None
    #: filled from the catalog when the fleet file leaves it out
    channels: tuple[Annotated[str, AfterValidator(_channel)], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_catalog(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill what the fleet file leaves out from the model's catalog entry."""
        if not isinstance(data, dict):
            return data
        catalog = _catalog(info)
        entry = catalog.compressors.get(data.get("model"))  # type: ignore[arg-type]
        if entry is None:
            return data     # the model's own validator says what is wrong
        out = dict(data)
        out.setdefault("driver", entry.driver)
        driver = out["driver"]
        if driver is not None and driver not in catalog.drivers:
            return out      # the driver's validator says what is wrong
        hp, rpm = catalog.ratings(out["model"], driver)
        if out.get("rated_hp") is None and hp is not None:
            out["rated_hp"] = hp
        if out.get("rated_rpm") is None and rpm is not None:
            out["rated_rpm"] = rpm
        if out.get("stages") is None:
            out["stages"] = entry.stages
        if out.get("channels") is None and isinstance(out["stages"], int):
            out["channels"] = catalog.unit_channels(out["model"], driver, out["stages"])
        return out

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        names = _catalog(info).model_names
        if value not in names:
            raise ValueError(f"unknown model {value!r} (models in the catalog: "
                             f"{', '.join(names)}; add it to the file of the setting "
                             "MODEL_CATALOG_FILE)")
        return value

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, value: str | None, info: ValidationInfo) -> str | None:
        drivers = sorted(_catalog(info).drivers)
        if value is not None and value not in drivers:
            raise ValueError(f"unknown driver {value!r} (drivers in the catalog: "
                             f"{', '.join(drivers)}; add it to the file of the setting "
                             "MODEL_CATALOG_FILE)")
        return value


class Fleet(_Record):
    """Everything in a ``fleet.json`` file."""

    organizations: tuple[Organization, ...]
    sites: tuple[Site, ...]
    compressors: tuple[Compressor, ...]
