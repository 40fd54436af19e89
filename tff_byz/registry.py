"""Named components with typed parameters: `NAME[:key=value,...]`, chained with `+`.

Aggregators and attacks are selected on the command line by spec strings such as
`trimmed_mean:beta=0.2` or `bucketing:s=2+median`. A `Registry` holds `Entry`s
(name, declared parameters with types and defaults, a builder, a one-line
description); `Registry.resolve(spec)` parses, type-checks and fills defaults,
returning `Resolved` components whose `canonical` string names every parameter
(written to config.json, so a run records exactly what it ran). Unknown names,
unknown keys, wrong types and out-of-range values raise `SpecError` with one line
naming the flag, the component, the value and the valid choices.

An entry's builder may be a `Reference` ("module:attribute"), imported on first call, so that
the tables and every check above import without TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

__all__ = ["SpecError", "Reference", "Param", "Entry", "Resolved", "Registry", "parse_spec",
           "non_negative", "positive", "at_least_one", "in_unit_interval"]


class SpecError(ValueError):
    """A bad component spec (CLI: exit 2)."""


def non_negative(value) -> Optional[str]:
    """A `Param.check`: value >= 0."""
    return None if value >= 0 else "must be >= 0"


def positive(value) -> Optional[str]:
    """A `Param.check`: value > 0."""
    return None if value > 0 else "must be > 0"


def at_least_one(value) -> Optional[str]:
    """A `Param.check`: value >= 1."""
    return None if value >= 1 else "must be >= 1"


def in_unit_interval(value) -> Optional[str]:
    """A `Param.check`: 0 < value <= 1."""
    return None if 0.0 < value <= 1.0 else "must be in (0, 1]"


@dataclasses.dataclass(frozen=True)
class Param:
    """A declared parameter: type (int, float, bool or str), default, optional check.

    `check(value) -> Optional[str]` returns an error fragment (the condition
    violated) or None. `choices` restricts str values.
    """
    type: type
    default: Any
    help: str = ""
    choices: Optional[Sequence[str]] = None
    check: Optional[Callable[[Any], Optional[str]]] = None

    def convert(self, raw: str) -> Any:
        if self.type is bool:
            lowered = raw.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        if self.type is int:
            return int(raw)
        if self.type is float:
            return float(raw)  # an int is accepted where a float is expected
        return raw


class Reference:
    """`"module:attribute"` (the attribute may be dotted): an object imported on first use.

    The project's one deferred import, for start-up time: the registries, the spec checks and
    each algorithm's flag checks import without TensorFlow (~5 s), so `--help`, `--list_*` and
    a bad flag answer at once; the TensorFlow code they name is imported by the first call (or
    `resolve`). Calling a reference calls its object.
    """
    __slots__ = ("target", "_value")
    _UNRESOLVED = object()

    def __init__(self, target: str):
        module, sep, attribute = target.partition(":")
        if not (sep and module and attribute):
            raise ValueError(f"expected 'module:attribute'; got {target!r}")
        self.target = target
        self._value = self._UNRESOLVED

    def resolve(self) -> Any:
        """The object (imports its module once)."""
        if self._value is self._UNRESOLVED:
            module, _, attribute = self.target.partition(":")
            value = importlib.import_module(module)
            for name in attribute.split("."):
                value = getattr(value, name)
            self._value = value
        return self._value

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, Reference) and other.target == self.target

    def __hash__(self) -> int:
        return hash(self.target)

    def __repr__(self) -> str:
        return f"Reference({self.target!r})"


@dataclasses.dataclass(frozen=True)
class Entry:
    """A named component. `build` is a callable or a `"module:attribute"` string (kept as a
    `Reference`, imported at the first build)."""
    name: str
    build: Callable[..., Any] | str | None
    params: Mapping[str, Param] = dataclasses.field(default_factory=dict)
    help: str = ""
    aliases: Sequence[str] = ()
    kind: str = ""  # e.g. "rule" / "pre-aggregator" for aggregators

    def __post_init__(self):
        if isinstance(self.build, str):
            object.__setattr__(self, "build", Reference(self.build))


@dataclasses.dataclass(frozen=True)
class Resolved:
    entry: Entry
    params: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def canonical(self) -> str:
        explicit = [(k, v) for k, v in self.params.items() if v is not None]  # None: automatic
        if not explicit:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format(v)}" for k, v in explicit)


    @property
    def compact(self) -> str:
        """Like `canonical` but naming only the parameters that differ from defaults."""
        changed = [(k, v) for k, v in self.params.items()
                   if v is not None and v != self.entry.params[k].default]
        if not changed:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format(v)}" for k, v in changed)


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# `+` joins components, except as a sign: after `=` (value=+3) or in an exponent (1e+16).
_JOIN = re.compile(r"(?<!=)(?<![0-9.][eE])\+")


def parse_spec(spec: str) -> list[tuple[str, dict[str, str]]]:
    """`a:k=v,k2=v2+b` → [("a", {"k": "v", "k2": "v2"}), ("b", {})] (strings only)."""
    components = []
    for part in _JOIN.split(spec):
        part = part.strip()
        if not part:
            raise ValueError("empty component")
        name, _, arguments = part.partition(":")
        params: dict[str, str] = collections.OrderedDict()
        for item in filter(None, (a.strip() for a in arguments.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected key=value, got {item!r}")
            if key.strip() in params:
                raise ValueError(f"parameter {key.strip()!r} given twice")
            params[key.strip()] = value.strip()
        components.append((name.strip(), params))
    return components


class Registry:
    """A table of named components for one flag (e.g. `--aggregator`)."""

    def __init__(self, flag: str):
        self.flag = flag
        self._entries: dict[str, Entry] = collections.OrderedDict()
        self._aliases: dict[str, str] = {}

    @classmethod
    def union(cls, flag: str, *registries: "Registry", entries: Sequence[Entry] = ()) -> "Registry":
        """One registry for `flag` holding every entry of `registries`, then `entries`."""
        merged = cls(flag)
        for registry in registries:
            for name in registry.names:
                merged.register(registry.entry(name))
        for entry in entries:
            merged.register(entry)
        return merged

    def register(self, entry: Entry) -> Entry:
        for name in (entry.name, *entry.aliases):
            if name in self._entries or name in self._aliases:
                raise ValueError(f"{self.flag}: {name!r} registered twice")
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name
        return entry

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def entry(self, name: str) -> Entry:
        name = self._aliases.get(name, name)
        if name not in self._entries:
            raise SpecError(f"{self.flag}: unknown name {name!r}; valid choices: "
                            f"{', '.join(self.names)}.")
        return self._entries[name]

    def resolve(self, spec: str) -> list[Resolved]:
        """Parses and validates `spec`; returns one `Resolved` per `+`-joined component."""
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError(f"{self.flag}: empty value; valid choices: {', '.join(self.names)}.")
        try:
            parsed = parse_spec(spec)
        except ValueError as error:
            raise SpecError(f"{self.flag}={spec!r}: {error}; expected NAME[:key=value,...].") from None
        return [self._resolve_one(name, raw) for name, raw in parsed]

    def _resolve_one(self, name: str, raw: Mapping[str, str]) -> Resolved:
        entry = self.entry(name)
        values = collections.OrderedDict()
        for key, raw_value in raw.items():
            if key not in entry.params:
                valid = ", ".join(entry.params) or "none"
                raise SpecError(f"{self.flag}: {entry.name} has no parameter {key!r}; "
                                f"valid parameters: {valid}.")
            param = entry.params[key]
            try:
                value = param.convert(raw_value)
            except ValueError:
                raise SpecError(f"{self.flag}: {entry.name}:{key}={raw_value!r} is not a valid "
                                f"{param.type.__name__}.") from None
            values[key] = value
        for key, param in entry.params.items():
            value = values.get(key, param.default)
            if key in values or value is not None:
                if param.choices is not None and value not in param.choices:
                    raise SpecError(f"{self.flag}: {entry.name}:{key}={value!r} is not one of "
                                    f"{', '.join(map(str, param.choices))}.")
                problem = param.check(value) if param.check and value is not None else None
                if problem:
                    raise SpecError(f"{self.flag}: {entry.name}:{key}={value!r} is invalid: {problem}.")
            values[key] = value
        ordered = collections.OrderedDict((k, values[k]) for k in entry.params)
        return Resolved(entry, ordered)

    def describe(self) -> str:
        """Human-readable listing for `--list_*` flags."""
        lines = []
        for entry in self._entries.values():
            head = entry.name + (f" (alias: {', '.join(entry.aliases)})" if entry.aliases else "")
            kind = f" [{entry.kind}]" if entry.kind else ""
            lines.append(f"{head}{kind}: {entry.help}")
            for key, param in entry.params.items():
                default = "auto" if param.default is None else _format(param.default)
                choices = f" one of {'|'.join(param.choices)};" if param.choices else ""
                lines.append(f"    {key} ({param.type.__name__};{choices} default {default}): {param.help}")
        return "\n".join(lines)
