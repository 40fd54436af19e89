"""A TOML grid of experiments, expanded to cells (pure: reads the TOML, runs nothing).

    [settings]                       # fixed for every cell: any ExperimentConfig field
    dataset = "digits"
    rounds = 10

    [axes]                           # the grid is the product of these lists
    aggregator = ["mean", "median"]  # an ExperimentConfig field: a list of its values
    attack = ["none", "sign_flip"]
    seed = [0, 1]
    heterogeneity = [                # any other name: a list of tables, each setting
      {partition = "iid"},           # several fields at once (optional `label`)
      {partition = "q", q = 0.9, label = "q=0.9"},
    ]

    [[exclude]]                      # drop the cells matching every key of one entry;
    aggregator = "mean"              # a list matches any of its values; keys are fields
    attack = ["sign_flip"]           # or table-axis names (matched against the label)

Every field of `ExperimentConfig` is accepted generically (the list comes from
`dataclasses.fields`), except `output_dir` and `run_name`, which the runner sets.
A cell's identity (`Cell.id`) is a hash of its resolved config without the
settings that do not change results (where the data and workers live, where the
run is written) and without fields at their default value, so a field added to
`ExperimentConfig` later keeps existing cells' ids. Editing the grid reuses
every cell whose resolved config is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
import typing
from typing import Any, Mapping, Optional

from orchestration.config import ConfigError, ExperimentConfig
from orchestration.grid.cells import CellRecord

__all__ = ["Grid", "Cell", "GridError", "load_grid", "parse_grid", "resolve_grid", "cell_id", "NON_IDENTITY_FIELDS"]

# Settings that say where things are, not what is computed: outside a cell's identity.
NON_IDENTITY_FIELDS = ("output_dir", "run_name", "tff_workers", "data_dir")
# Set by the runner for every cell.
RUNNER_FIELDS = ("output_dir", "run_name")
TOP_LEVEL_KEYS = ("name", "description", "settings", "axes", "exclude")
LABEL_KEY = "label"


class GridError(ConfigError):
    """An invalid grid file (CLI: exit 2)."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One experiment of the grid."""
    id: str                       # hash of the resolved config (see `cell_id`)
    config: ExperimentConfig      # resolved, with run_name = <derived name>_<id>
    axes: Mapping[str, Any]       # the axis values that define this cell (labels for table axes)

    @property
    def run_name(self) -> str:
        return self.config.run_name

    def record(self) -> CellRecord:
        return CellRecord(self.id, self.run_name, self.config.rounds, dict(self.axes),
                          self.config.to_dict())


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    settings: Mapping[str, Any]
    axes: Mapping[str, list]           # axis name -> list of values (tables for table axes)
    exclude: tuple[Mapping[str, Any], ...]

    def cells(self, output_dir: str) -> list["Cell"]:
        """The grid's cells in axis order, exclusions dropped, each resolved and validated."""
        cells, seen = [], {}
        names = list(self.axes)
        for combination in itertools.product(*(self.axes[name] for name in names)):
            values = dict(self.settings)
            labels = {}
            for name, value in zip(names, combination):
                if _is_table_axis(name):
                    values.update({k: v for k, v in value.items() if k != LABEL_KEY})
                    labels[name] = _table_label(value)
                else:
                    values[name] = value
                    labels[name] = value
            if any(_matches(rule, values, labels) for rule in self.exclude):
                continue
            config = _resolve(values, labels)
            identity = cell_id(config)
            if identity in seen:
                raise GridError(f"cells {seen[identity]} and {_describe(labels)} are the same "
                                "experiment; remove the duplicate axis value.")
            seen[identity] = _describe(labels)
            # The cell id already tells cells apart: the base name keeps grid run names stable.
            config = dataclasses.replace(config, output_dir=output_dir,
                                         run_name=f"{config.base_run_name()}_{identity[:8]}")
            cells.append(Cell(identity, config, labels))
        return cells


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ExperimentConfig)


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(ExperimentConfig)]


def _is_table_axis(name: str) -> bool:
    return name not in config_fields()


def _table_label(table: Mapping[str, Any]) -> str:
    if LABEL_KEY in table:
        return str(table[LABEL_KEY])
    return ",".join(f"{k}={v}" for k, v in table.items())


def _describe(labels: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in labels.items()) + "}"


def _matches(rule: Mapping[str, Any], values: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    for key, wanted in rule.items():
        actual = labels[key] if key in labels and _is_table_axis(key) else values.get(key, defaults[key])
        options = wanted if isinstance(wanted, list) else [wanted]
        if actual not in options:
            return False
    return True


def _resolve(values: Mapping[str, Any], labels: Mapping[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig(**values).resolved()
    except ConfigError as error:
        raise GridError(f"cell {_describe(labels)}: {error} (drop it with an [[exclude]] entry)"
                        ) from None


def cell_id(config: ExperimentConfig) -> str:
    """Hex SHA-256 of the resolved config's identity: fields that change results, at
    non-default values, as canonical JSON."""
    defaults = ExperimentConfig()
    identity = {k: v for k, v in config.to_dict().items()
                if k not in NON_IDENTITY_FIELDS and v != getattr(defaults, k)}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _coerce(field: str, value: Any, where: str) -> Any:
    """TOML value -> the field's type: ints where floats are expected become floats
    (so `0` and `0.0` are the same cell); wrong types are errors."""
    expected = _field_types()[field]
    allowed = typing.get_args(expected) if typing.get_origin(expected) is typing.Union else (expected,)
    if value is None or (type(value) in allowed and not (isinstance(value, bool) and bool not in allowed)):
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    names = " or ".join(t.__name__ for t in allowed if t is not type(None))
    raise GridError(f"{where}: {field} must be {names}; got {value!r}.")


def _check_field(field: str, where: str) -> None:
    if field in RUNNER_FIELDS:
        raise GridError(f"{where}: {field} is set by pipelines.compare (--output_dir); remove it.")
    if field not in config_fields():
        raise GridError(f"{where}: unknown setting {field!r}; valid settings: "
                        f"{', '.join(f for f in config_fields() if f not in RUNNER_FIELDS)}.")


def parse_grid(document: Mapping[str, Any], source: str = "grid") -> Grid:
    """A `Grid` from a parsed TOML document; `GridError` names the bad key or value."""
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise GridError(f"{source}: unknown key(s) {unknown}; valid keys: {', '.join(TOP_LEVEL_KEYS)}.")
    settings = document.get("settings", {})
    axes = document.get("axes", {})
    exclude = document.get("exclude", [])
    if not isinstance(settings, dict):
        raise GridError(f"{source}: [settings] must be a table; got {settings!r}.")
    if not isinstance(axes, dict):
        raise GridError(f"{source}: [axes] must be a table; got {axes!r}.")
    if not isinstance(exclude, list) or not all(isinstance(e, dict) for e in exclude):
        raise GridError(f"{source}: exclude must be an array of tables ([[exclude]]).")

    parsed_settings = {}
    for field, value in settings.items():
        _check_field(field, f"{source} [settings]")
        parsed_settings[field] = _coerce(field, value, f"{source} [settings]")

    parsed_axes, set_by = {}, {}
    for name, values in axes.items():
        where = f"{source} [axes] {name}"
        if not isinstance(values, list) or not values:
            raise GridError(f"{where}: an axis must be a non-empty list; got {values!r}.")
        if _is_table_axis(name):
            if not all(isinstance(v, dict) and v for v in values):
                raise GridError(f"{where}: not a setting, so its values must be tables of settings "
                                f"(e.g. {{partition = \"q\", q = 0.9}}); got {values!r}. Valid settings: "
                                f"{', '.join(f for f in config_fields() if f not in RUNNER_FIELDS)}.")
            tables = []
            for table in values:
                fields = {}
                for field, value in table.items():
                    if field == LABEL_KEY:
                        fields[field] = str(value)
                        continue
                    _check_field(field, where)
                    fields[field] = _coerce(field, value, where)
                    _claim(set_by, field, name, parsed_settings, source)
                tables.append(fields)
            labels = [_table_label(t) for t in tables]
            if len(set(labels)) != len(labels):
                raise GridError(f"{where}: duplicate values {labels}.")
            parsed_axes[name] = tables
        else:
            _check_field(name, f"{source} [axes]")
            _claim(set_by, name, name, parsed_settings, source)
            coerced = [_coerce(name, v, where) for v in values]
            if len(set(map(repr, coerced))) != len(coerced):
                raise GridError(f"{where}: duplicate values {coerced}.")
            parsed_axes[name] = coerced

    parsed_exclude = []
    for index, rule in enumerate(exclude):
        where = f"{source} [[exclude]] #{index + 1}"
        if not rule:
            raise GridError(f"{where}: an empty exclusion would drop every cell.")
        for key in rule:
            if key not in parsed_axes and key not in config_fields():
                raise GridError(f"{where}: unknown key {key!r}; valid keys: "
                                f"{', '.join(list(parsed_axes) + [f for f in config_fields() if f not in parsed_axes])}.")
        parsed_exclude.append(dict(rule))
    name = document.get("name", source)
    return Grid(str(name), parsed_settings, parsed_axes, tuple(parsed_exclude))


def _claim(set_by: dict, field: str, axis: str, settings: Mapping[str, Any], source: str) -> None:
    if field in settings:
        raise GridError(f"{source}: {field} is both in [settings] and on the axis {axis!r}; keep one.")
    if set_by.get(field, axis) != axis:
        raise GridError(f"{source}: {field} is set by two axes ({set_by[field]!r} and {axis!r}); keep one.")
    set_by[field] = axis


def load_grid(path: str, name: Optional[str] = None) -> Grid:
    """Reads and parses a grid TOML file."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise GridError(f"grid file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise GridError(f"{path}: invalid TOML: {error}") from None
    return parse_grid(document, source=name or path)


def resolve_grid(path: str, runs_dir: str) -> dict[str, Any]:
    """The grid file resolved for the runner, as JSON values: `{"name", "cells"}` with
    each cell a `CellRecord.to_dict()` whose run directory is under `runs_dir`, or
    `{"error"}` with the GridError's one-line message for an invalid grid."""
    try:
        grid = load_grid(path)
        cells = grid.cells(runs_dir)
    except GridError as error:
        return dict(error=str(error))
    return dict(name=grid.name, cells=[cell.record().to_dict() for cell in cells])
