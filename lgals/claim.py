"""A claim under test, as a file (docs/claim.md): the accuracies it reports, the protocol it
measured them with, the orderings it asserts, its dataset and noise setting, and, optionally,
mechanism claims (the note's: detection, alignment, cost) with the thresholds at which the
report calls each supported.

The claim is data, not code: :func:`load` reads a YAML file and holds every field to its type
and range, so a bad field is one line naming it before anything starts. The note's claim is
the file ``lgals/claims/note.yaml`` (:func:`note`). Claimed numbers are copied, never
measured: the report states ours beside them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from lgals.data import DATASETS, MAX_NOISE_RATE, NOISE_TYPES, NoiseRecipe
from lgals.documents import read_document
from lgals.errors import BadSetting
from lgals.losses import MODES
from lgals.protocols import PROTOCOLS, ROBUST, Protocol

NOTE_FILE = Path(__file__).with_name("claims") / "note.yaml"
DEFAULT_PROTOCOL = ROBUST  # what a claim file that names no protocol is tested with
PROTOCOL_FIELDS = ("n_trials", "epochs", "seeds", "repeats")  # a file's own protocol's


class Accuracy(NamedTuple):
    """% test accuracy, mean and std over the claim's seeds."""

    mean: float
    std: float


@dataclass(frozen=True)
class Detection:
    """1 − s_i of ``mode``'s runs finds the flipped labels (its AUROC's 95% CI above
    ``auroc_above``) and ``mode`` smooths them more (ε(noisy) − ε(clean) above
    ``eps_gap_above``)."""

    mode: str
    auroc_above: float
    eps_gap_above: float


@dataclass(frozen=True)
class Alignment:
    """s_i tracks the weight-gradient alignment with Pearson's r ≈ ``correlation``; supported
    when every checkpoint of ``lgals diagnose`` reaches ``r_min``."""

    correlation: float
    r_min: float


@dataclass(frozen=True)
class Cost:
    """``mode`` takes at most ``ratio_max`` times ``reference``'s seconds per epoch."""

    mode: str
    reference: str
    ratio_max: float


@dataclass(frozen=True)
class Claim:
    """One claim file, checked. ``protocol`` is the one its numbers came from and the one
    ``lgals reproduce --claim`` runs, at the claim's noise setting and over its modes."""

    name: str
    path: str
    dataset: str
    protocol: Protocol
    accuracy: Mapping[str, Accuracy]
    orderings: tuple[tuple[str, str], ...]  # (A, B): A beats B
    detection: Detection | None = None
    alignment: Alignment | None = None
    cost: Cost | None = None

    @property
    def modes(self) -> tuple[str, ...]:
        """Every mode the claim names, in the order it first names them."""
        named = [*self.accuracy, *(mode for pair in self.orderings for mode in pair),
                 *(section.mode for section in (self.detection, self.cost) if section),
                 *((self.cost.reference,) if self.cost else ())]
        return tuple(dict.fromkeys(named))

    def claimed(self, a: str, b: str) -> float | None:
        """A − B in pp from the claimed means; None when it claims no mean for one of them."""
        if a not in self.accuracy or b not in self.accuracy:
            return None
        return self.accuracy[a].mean - self.accuracy[b].mean


@functools.cache
def note() -> Claim:
    """The note's claim (``lgals/claims/note.yaml``): what ``lgals reproduce`` and ``lgals
    report`` test unless ``--claim`` names another file."""
    return load(NOTE_FILE)


def load(path: str | Path) -> Claim:
    """The claim in the YAML file ``path``, every field checked: a missing, unknown or
    malformed one raises :class:`BadSetting` with one line naming it."""
    where = f"claim file {path}"
    document = read_document(path, where)
    return _Reader(where).claim(document, Path(path))


class _Reader:
    """Reads one claim file's document, raising one line per bad field (``where``: the
    file, as the line names it)."""

    SECTIONS = ("name", "dataset", "noise", "protocol", "accuracy", "orderings", "detection",
                "alignment", "cost")

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str) -> BadSetting:
        return BadSetting(f"{self.where}: {field} {problem}")

    def claim(self, document: Any, path: Path) -> Claim:
        fields = self.mapping(document, "the file", required=("dataset", "noise", "orderings"),
                              allowed=self.SECTIONS)
        protocol = self.protocol(fields.get("protocol"))
        dataset = self.dataset(fields["dataset"])
        protocol = replace(protocol, noise=self.noise(fields["noise"], protocol, dataset))
        claim = Claim(
            name=self.string(fields.get("name", path.stem), "name"),
            path=str(path),
            dataset=dataset,
            protocol=protocol,
            accuracy=self.accuracy(fields.get("accuracy", {})),
            orderings=self.orderings(fields["orderings"]),
            detection=self.section(fields, "detection", Detection, {
                "mode": self.mode, "auroc_above": self.probability,
                "eps_gap_above": self.number}),
            alignment=self.section(fields, "alignment", Alignment, {
                "correlation": self.correlation, "r_min": self.correlation}),
            cost=self.section(fields, "cost", Cost, {
                "mode": self.mode, "reference": self.mode, "ratio_max": self.positive}))
        return replace(claim, protocol=replace(claim.protocol, modes=claim.modes))

    # --- the sections ------------------------------------------------------------------------

    def dataset(self, value: Any) -> str:
        """A registered dataset's name (``lgals datasets`` lists them)."""
        name = self.string(value, "dataset")
        if name not in DATASETS:
            raise self.fail("dataset", f"must be a registered dataset ({', '.join(DATASETS)}), "
                            f"got {name!r}")
        return name

    def noise(self, value: Any, protocol: Protocol, dataset: str) -> NoiseRecipe:
        fields = self.mapping(value, "noise", required=("rate", "type"),
                              allowed=("rate", "type"))
        rate = self.number(fields["rate"], "noise.rate")
        if not 0 <= rate <= MAX_NOISE_RATE:
            raise self.fail("noise.rate", f"must be in [0, {MAX_NOISE_RATE}], got {rate!r}")
        kind = fields["type"]
        if kind not in NOISE_TYPES:
            raise self.fail("noise.type", f"must be one of {', '.join(NOISE_TYPES)}, got "
                            f"{kind!r}")
        return replace(protocol.noise, noise_rate=float(rate), noise_type=kind, dataset=dataset)

    def protocol(self, value: Any) -> Protocol:
        """A protocol's name, or its own sizes (the rest :data:`DEFAULT_PROTOCOL`'s); none:
        :data:`DEFAULT_PROTOCOL`."""
        if value is None:
            return DEFAULT_PROTOCOL
        if isinstance(value, str):
            if value not in PROTOCOLS:
                raise self.fail("protocol", f"must be one of {', '.join(PROTOCOLS)} or a "
                                f"mapping of {', '.join(PROTOCOL_FIELDS)}, got {value!r}")
            return PROTOCOLS[value]
        fields = self.mapping(value, "protocol", required=(), allowed=PROTOCOL_FIELDS)
        sizes = {name: self.count(number, f"protocol.{name}") for name, number in fields.items()}
        return replace(DEFAULT_PROTOCOL, name="custom", **sizes)

    def accuracy(self, value: Any) -> dict[str, Accuracy]:
        fields = self.mapping(value, "accuracy", required=(), allowed=None)
        table = {}
        for mode, entry in fields.items():
            field = f"accuracy.{mode}"
            self.mode(mode, field)
            numbers = self.mapping(entry, field, required=("mean", "std"),
                                   allowed=("mean", "std"))
            mean = self.number(numbers["mean"], f"{field}.mean")
            if not 0 <= mean <= 100:
                raise self.fail(f"{field}.mean", f"must be a percentage in [0, 100], got "
                                f"{mean!r}")
            std = self.number(numbers["std"], f"{field}.std")
            if std < 0:
                raise self.fail(f"{field}.std", f"must be at least 0, got {std!r}")
            table[mode] = Accuracy(float(mean), float(std))
        return table

    def orderings(self, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("orderings", f"must be a non-empty list of [A, B] pairs (A beats "
                            f"B), got {value!r}")
        pairs: list[tuple[str, str]] = []
        for number, pair in enumerate(value):
            field = f"orderings[{number}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise self.fail(field, f"must be a pair [A, B] of modes (A beats B), got "
                                f"{pair!r}")
            a, b = (self.mode(mode, f"{field}[{i}]") for i, mode in enumerate(pair))
            if a == b:
                raise self.fail(field, f"compares {a!r} with itself")
            if (a, b) in pairs or (b, a) in pairs:
                raise self.fail(field, f"repeats or reverses an earlier ordering of {a!r} and "
                                f"{b!r}")
            pairs.append((a, b))
        return tuple(pairs)

    def section(self, fields: dict, name: str, kind: type, readers: dict):
        """An optional section: ``kind`` from its fields, each read by its reader."""
        if name not in fields:
            return None
        values = self.mapping(fields[name], name, required=tuple(readers), allowed=tuple(readers))
        return kind(**{key: read(values[key], f"{name}.{key}") for key, read in readers.items()})

    # --- the fields ----------------------------------------------------------------------------

    def mapping(self, value: Any, field: str, required: tuple[str, ...],
                allowed: tuple[str, ...] | None) -> dict:
        """``value`` as a mapping with string keys, every ``required`` key in it and no key
        outside ``allowed`` (None: any)."""
        if not isinstance(value, dict):
            keys = ", ".join(allowed or required) or "mode: {mean, std}"
            raise self.fail(field, f"must be a mapping ({keys}), got {value!r}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(field, f"has a key that is not a name: {key!r}")
            if allowed is not None and key not in allowed:
                name = key if field == "the file" else f"{field}.{key}"
                raise self.fail(name, f"is not a field a claim has (allowed: "
                                f"{', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(key if field == "the file" else f"{field}.{key}", "is missing")
        return value

    def mode(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or value not in MODES:
            raise self.fail(field, f"must be a mode ({', '.join(MODES)}), got {value!r}")
        return value

    def string(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise self.fail(field, f"must be a number, got {value!r}")
        return value

    def probability(self, value: Any, field: str) -> float:
        number = self.number(value, field)
        if not 0 <= number <= 1:
            raise self.fail(field, f"must be in [0, 1], got {number!r}")
        return number

    def correlation(self, value: Any, field: str) -> float:
        number = self.number(value, field)
        if not -1 <= number <= 1:
            raise self.fail(field, f"must be in [-1, 1], got {number!r}")
        return number

    def positive(self, value: Any, field: str) -> float:
        number = self.number(value, field)
        if number <= 0:
            raise self.fail(field, f"must be above 0, got {number!r}")
        return number

    def count(self, value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, f"must be a whole number of at least 1, got {value!r}")
        return value
