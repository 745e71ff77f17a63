"""Entry-point registries: lgals' built-ins and users' packages fill them the same way.

A package registers things in its ``pyproject.toml`` under a group (``lgals.modes``,
``lgals.datasets``); each entry point names a mapping ``{name: thing}``, so a package with
several modes registers one entry point and their order is its own. lgals registers its own
built-ins in the same groups: there is one path, not two.

A package that fails to import, reuses a name already taken or declares something invalid is
reported in one line naming the package (:attr:`Registry.problems`) and skipped; the rest of
the registry keeps working.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")
HOME = "lgals"  # the distribution whose entries are the built-ins, loaded first
NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a name fit for a CLI choice, a tag and a study


@dataclass(frozen=True)
class Origin:
    """The code an entry comes from: its distribution, version and the SHA-256 of the file
    of the module its entry point names (so a result says exactly what code produced it)."""

    distribution: str
    version: str
    module: str
    file_sha256: str

    @property
    def builtin(self) -> bool:
        return self.distribution == HOME

    def describe(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """What one entry-point group registered: entries by name in load order, where each came
    from, and one line per package that could not be registered."""

    entries: dict[str, T]
    origins: dict[str, Origin]
    problems: tuple[str, ...]


class Registry(Mapping[str, T]):
    """A read-only mapping of an entry-point group, loaded on first use: a plugin may import
    lgals' public API while lgals is still importing, and commands that never look at the
    registry never import plugins."""

    def __init__(self, group: str, kind: type[T],
                 validate: Callable[[str, T, Mapping[str, T]], None] | None = None):
        self.group, self.kind, self.validate = group, kind, validate

    @cached_property
    def loaded(self) -> Loaded[T]:
        return load(self.group, self.kind, self.validate)

    @property
    def origins(self) -> dict[str, Origin]:
        return self.loaded.origins

    @property
    def problems(self) -> tuple[str, ...]:
        return self.loaded.problems

    def __getitem__(self, name: str) -> T:
        return self.loaded.entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.loaded.entries)

    def __len__(self) -> int:
        return len(self.loaded.entries)


def _file_sha256(module_name: str) -> str:
    path = getattr(sys.modules.get(module_name), "__file__", None)
    if path is None:
        return ""
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def _distribution(entry_point: EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    return (dist.metadata["Name"], dist.version) if dist is not None else ("unknown", "")


def load(group: str, kind: type[T],
         validate: Callable[[str, T, Mapping[str, T]], None] | None = None) -> Loaded[T]:
    """Every entry of ``group``: the home distribution's first, then other packages' by
    distribution and entry-point name. ``validate(name, thing, registered)`` raises
    ``ValueError`` saying what is wrong with a thing, given the things registered before it."""
    found = sorted(entry_points(group=group), key=lambda ep: (
        _distribution(ep)[0] != HOME, _distribution(ep)[0].lower(), ep.name))
    entries: dict[str, T] = {}
    origins: dict[str, Origin] = {}
    problems: list[str] = []
    for entry_point in found:
        distribution, version = _distribution(entry_point)
        where = f"{group} plugin from {distribution} {version} (entry point {entry_point.name!r})"
        try:
            registered = entry_point.load()
        except Exception as error:  # a plugin's import may fail in any way: report, skip it
            problems.append(f"{where} failed to import: {type(error).__name__}: {error}")
            continue
        if not isinstance(registered, Mapping):
            problems.append(f"{where} names a {type(registered).__name__}, not a mapping "
                            f"of names to {kind.__name__}s")
            continue
        origin = Origin(distribution, version, entry_point.module,
                        _file_sha256(entry_point.module))
        for name, thing in registered.items():
            if not isinstance(name, str) or not NAME.match(name):
                problems.append(f"{where}: name {name!r} must be lowercase letters, digits and "
                                f"underscores, starting with a letter; skipped")
            elif name in entries:
                problems.append(f"{where}: {name!r} is already registered by "
                                f"{origins[name].describe()}; skipped")
            elif not isinstance(thing, kind):
                problems.append(f"{where}: {name!r} is a {type(thing).__name__}, not a "
                                f"{kind.__name__}; skipped")
            else:
                try:
                    if validate is not None:
                        validate(name, thing, entries)
                except ValueError as error:
                    problems.append(f"{where}: {name!r}: {error}; skipped")
                    continue
                entries[name], origins[name] = thing, origin
    return Loaded(entries, origins, tuple(problems))
