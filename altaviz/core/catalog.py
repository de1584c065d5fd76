"""The model catalog: which compressor and driver models exist, their ratings, the channels
they carry and per-model limits for the rules.

A fleet names each unit's model; the catalog turns that name into what the rest of Altaviz
needs: the rated speed (the rules' running gate), the stage count, the channels a unit of
that model carries (a channel it does not carry is absent, not missing) and limits that
replace a rule's thresholds for the model. The built-in catalog (``models.yaml`` beside this
module) holds the three packages of the simulated fleet; an operator adds models, or replaces
a built-in one, with a catalog file of the same format named by the setting
``model_catalog_file``. Errors name the file, the line and the key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from altaviz.core.errors import InputError
from altaviz.core.located import KeyPath, key_lines, located
from altaviz.core.telemetry import CHANNEL_BY_NAME, CHANNELS, MAX_STAGES

BUILTIN_CATALOG_FILE = Path(__file__).resolve().parent / "models.yaml"

#: Channels of every frame unless its catalog entry lists its own.
FRAME_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.group == "frame")
#: Per-stage channels, named without their ``stage<N>_`` prefix.
STAGE_CHANNELS: tuple[str, ...] = tuple(
    c.name.removeprefix("stage1_") for c in CHANNELS if c.name.startswith("stage1_"))
#: Channels a driver (a separate engine) carries unless its entry lists its own.
DRIVER_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.group == "driver")


def _channel(name: str) -> str:
    if name not in CHANNEL_BY_NAME or name.startswith("stage"):
        raise ValueError(f"unknown channel {name!r} (expected a channel of the telemetry "
                         f"contract, altaviz/core/telemetry.py, without a stage, e.g. "
                         f"{', '.join(FRAME_CHANNELS[:3])})")
    return name


def _stage_channel(name: str) -> str:
    if name not in STAGE_CHANNELS:
        raise ValueError(f"unknown stage channel {name!r} (expected one of: "
                         f"{', '.join(STAGE_CHANNELS)})")
    return name


def _number(value: Any) -> Any:
    """Numbers only: YAML ``"350"`` or ``yes`` is a typo, not a limit."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number (got {value!r})")
    return float(value)


ChannelName = Annotated[StrictStr, AfterValidator(_channel)]
StageChannelName = Annotated[StrictStr, AfterValidator(_stage_channel)]
Number = Annotated[float, BeforeValidator(_number)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Entry):
    """A rule's thresholds for one model (absolute values; only the keys given change)."""

    warning: Number | None = None
    critical: Number | None = None
    clear: Number | None = None


class DriverModel(_Entry):
    """An engine or motor that drives a separable compressor."""

    description: StrictStr | None = None
    rated_hp: Annotated[StrictInt, Field(gt=0)] | None = None
    rated_rpm: Annotated[StrictInt, Field(gt=0)] | None = None
    channels: tuple[ChannelName, ...] = DRIVER_CHANNELS


class CompressorModel(_Entry):
    """A compressor frame (or an integral engine-compressor, with ``driver: null``)."""

    description: StrictStr | None = None
    #: The usual driver of the package; a unit may name another.
    driver: StrictStr | None = None
    #: The package's rating; unset: the driver's.
    rated_hp: Annotated[StrictInt, Field(gt=0)] | None = None
    rated_rpm: Annotated[StrictInt, Field(gt=0)] | None = None
    #: The usual stage count; a unit may say otherwise.
    stages: Annotated[StrictInt, Field(ge=1, le=MAX_STAGES)]
    channels: tuple[ChannelName, ...] = FRAME_CHANNELS
    stage_channels: tuple[StageChannelName, ...] = STAGE_CHANNELS
    #: Rule id -> thresholds for units of this model (a rule's own ``models:`` entry wins).
    limits: dict[Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")], Limits] = {}


class CatalogFile(_Entry):
    """What a catalog file may say."""

    format: Literal[1] = 1
    drivers: dict[StrictStr, DriverModel] = {}
    compressors: dict[StrictStr, CompressorModel] = {}


@dataclass(frozen=True)
class Catalog:
    """The models in force: the built-in catalog with an operator's file over it.

    ``where`` maps ``(section, name, ...)`` key paths to ``(file, line)``, so a problem found
    later (a limit for a rule that does not exist) can still point at its line.
    """

    drivers: Mapping[str, DriverModel]
    compressors: Mapping[str, CompressorModel]
    where: Mapping[KeyPath, tuple[str, int]] = field(default_factory=dict)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every compressor model, sorted."""
        return tuple(sorted(self.compressors))

    def ratings(self, model: str, driver: str | None) -> tuple[int | None, int | None]:
        """``(rated_hp, rated_rpm)`` of a package: the model's, else its driver's."""
        m = self.compressors[model]
        d = self.drivers.get(driver) if driver is not None else None
        hp = m.rated_hp if m.rated_hp is not None else (d.rated_hp if d else None)
        rpm = m.rated_rpm if m.rated_rpm is not None else (d.rated_rpm if d else None)
        return hp, rpm

    def unit_channels(self, model: str, driver: str | None, stages: int) -> tuple[str, ...]:
        """The channels a unit carries, in the telemetry contract's order."""
        m = self.compressors[model]
        have = set(m.channels)
        have |= {f"stage{s}_{c}" for s in range(1, stages + 1) for c in m.stage_channels}
        if driver is not None and driver in self.drivers:
            have |= set(self.drivers[driver].channels)
        return tuple(c.name for c in CHANNELS if c.name in have)

    def locate(self, path: KeyPath) -> tuple[str, int]:
        """``(file, line)`` of a key path, or of its nearest ancestor."""
        p = tuple(path)
        while p and p not in self.where:
            p = p[:-1]
        return self.where.get(p, ("model catalog", 0))

    def limits(self, rule_id: str) -> dict[str, Limits]:
        """Model -> the catalog's thresholds for one rule."""
        return {m: e.limits[rule_id] for m, e in self.compressors.items() if rule_id in e.limits}


def default_channels(stages: int, has_driver: bool) -> tuple[str, ...]:
    """The channels of a unit registered without a channel list (before the catalog): the
    frame's, its stages' and, with a driver, the driver's."""
    have = set(FRAME_CHANNELS) | {f"stage{s}_{c}" for s in range(1, stages + 1)
                                  for c in STAGE_CHANNELS}
    if has_driver:
        have |= set(DRIVER_CHANNELS)
    return tuple(c.name for c in CHANNELS if c.name in have)


def _read(path: Path) -> tuple[CatalogFile, dict[KeyPath, int]]:
    name = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read model catalog {name}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise InputError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines = key_lines(text)
    try:
        return CatalogFile.model_validate(data if data is not None else {}), lines
    except ValidationError as exc:
        problems = [located(name, lines, tuple(e["loc"]), e["msg"]) for e in exc.errors()]
        raise InputError(_join(problems)) from None


def _join(problems: list[str]) -> str:
    more = (f" (and {len(problems) - 1} more problem(s): " + "; ".join(problems[1:]) + ")"
            if len(problems) > 1 else "")
    return problems[0] + more


def _load(extra: Path | None) -> Catalog:
    files = [BUILTIN_CATALOG_FILE, *([extra] if extra is not None else [])]
    drivers: dict[str, DriverModel] = {}
    compressors: dict[str, CompressorModel] = {}
    where: dict[KeyPath, tuple[str, int]] = {}
    named: dict[str, tuple[str, dict[KeyPath, int]]] = {}
    for path in files:
        cat, lines = _read(path)
        for section, entries in (("drivers", cat.drivers), ("compressors", cat.compressors)):
            # a later file's entry replaces an earlier one, locations included
            for key in [k for k in where if k[0] == section and k[1] in entries]:
                del where[key]
            for key, line in lines.items():
                if len(key) >= 2 and key[0] == section and key[1] in entries:
                    where[key] = (str(path), line)
        drivers.update(cat.drivers)
        compressors.update(cat.compressors)
        for model in cat.compressors:
            named[model] = (str(path), lines)
    problems = []
    for model, entry in compressors.items():
        file, lines = named[model]
        if entry.driver is not None and entry.driver not in drivers:
            problems.append(located(file, lines, ("compressors", model, "driver"),
                                    f"unknown driver {entry.driver!r} (drivers in the "
                                    f"catalog: {', '.join(sorted(drivers))})"))
        elif Catalog(drivers, compressors).ratings(model, entry.driver)[1] is None:
            problems.append(located(file, lines, ("compressors", model),
                                    "no rated_rpm: give one, or a driver that has one "
                                    "(the rules judge whether a unit runs against it)"))
    if problems:
        raise InputError(_join(problems))
    return Catalog(drivers=drivers, compressors=compressors, where=where)


@cache
def builtin_catalog() -> Catalog:
    """The catalog shipped with Altaviz (read once)."""
    return _load(None)


def load_catalog(extra: Path | None = None) -> Catalog:
    """The built-in catalog with ``extra`` (an operator's catalog file) over it.

    Raises:
        InputError: a file cannot be read, is not YAML or has invalid entries; the message
            names the file, the line and the key path of each problem.
    """
    return builtin_catalog() if extra is None else _load(extra)
