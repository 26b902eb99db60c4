"""TOML configurations: parsing, `--set` overrides and validation before any work.

Exports:
    Spec(kind, default=REQUIRED, choices=None, min=None, max=None, help="")   one key's contract
    ConfigError                       bad configuration; its message names every bad key
    load_config(path, schema, overrides=(), comm=None) -> dict   validated config, defaults filled
    read_raw_config(path, overrides=()) -> dict   the TOML with overrides, not validated
    validate(raw, schema) -> dict     the same for an already-parsed dict
    LATTICE, ACTION, SAMPLER, OUTPUT  the shared section schemas of DESIGN 3
    check_cluster(sampler, ranks_per_chain)   ConfigError for cluster settings a chain cannot run

Kinds: "int", "float", "str", "bool", "list[int]", "list[float]", "list[str]", "list[list[int]]",
"table" (free-form sub-table). Rank 0 reads and validates, then broadcasts the verdict, so every
rank agrees and raises the same ConfigError.
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from typing import Any

from qftml.collective import on_root

REQUIRED = object()


class ConfigError(ValueError):
    """A configuration problem; the message is meant for the user as it is."""


@dataclass
class Spec:
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""
    min_exclusive: bool = field(default=False)


LATTICE = {
    "shape": Spec("list[int]", help="global extents, e.g. [64, 64]"),
    "grid": Spec("list[int]", default=[], help="process grid (default: chosen automatically)"),
}
ACTION = {
    "kappa": Spec("float", 1.0, help="hopping coupling w"),
    "mu2": Spec("float", -0.9515, help="bare mass squared"),
    "lam": Spec("float", 0.7, min=0.0, help="quartic coupling (b = lam/4)"),
    "h": Spec("float", 0.0, help="external field (r = -h)"),
    "couplings": Spec("str", "", help="HDF5 file with /couplings/<w|g|a|b|r> (inhomogeneous action)"),
    "field": Spec("str", "real", choices=("real", "ising")),
    "extra": Spec("str", "", choices=("", "nnn"), help="extra links: 'nnn' = 2D diagonals"),
    "g": Spec("float", 0.0, help="coupling of the extra links"),
}
SAMPLER = {
    "algorithm": Spec("str", "metropolis", choices=("metropolis", "heatbath")),
    "sweeps": Spec("int", 1000, min=1, help="sweeps after thermalisation"),
    "thermalize": Spec("int", 1000, min=0, help="thermalisation sweeps (Metropolis step tuned here)"),
    "every": Spec("int", 1, min=1, help="sweeps between stored configurations"),
    "hits": Spec("int", 1, min=1, help="Metropolis hits per site and sweep"),
    "seed": Spec("int", 0, min=0),
    "step": Spec("float", 1.0, min=0.0, min_exclusive=True, help="initial Metropolis step"),
    "start": Spec("str", "hot", choices=("hot", "cold")),
    "checkpoint_every": Spec("int", 100, min=0, help="sweeps between checkpoints (0: only at the end)"),
    "cluster": Spec("str", "none", choices=("none", "swendsen-wang", "wolff"),
                    help="cluster update of the signs of phi (DESIGN 1.2b); wolff needs one rank per chain"),
    "cluster_every": Spec("int", 1, min=1, help="local sweeps per cluster update (it counts as part of a sweep)"),
}
OUTPUT = {
    "path": Spec("str", help="output HDF5 file"),
}


def check_cluster(sampler: dict, ranks_per_chain: int) -> None:
    """Raise ConfigError if the [sampler] cluster settings cannot run on chains of this many ranks."""
    if sampler.get("cluster") == "wolff" and ranks_per_chain > 1:
        raise ConfigError(f"sampler.cluster = 'wolff' grows one cluster at a time and needs the whole lattice on "
                          f"one rank, but a chain here runs on {ranks_per_chain} ranks: use "
                          f"sampler.cluster = 'swendsen-wang' (any process grid) or one rank per chain")


def _check_kind(value, kind):
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_float(v):
        return (isinstance(v, (int, float))) and not isinstance(v, bool)

    if kind == "int":
        return is_int(value)
    if kind == "float":
        return is_float(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, dict)
    if kind.startswith("list[") and kind.endswith("]"):
        inner = kind[5:-1]
        return isinstance(value, list) and all(_check_kind(v, inner) for v in value)
    raise ValueError(f"unknown config kind {kind!r}")


def _check_value(name, value, spec):
    """(value as stored, None) or (None, the error message) for one given key."""
    if not _check_kind(value, spec.kind):
        return None, f"{name} = {value!r} has the wrong type: expected {spec.kind}"
    if spec.kind == "float":
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        return None, f"{name} = {value!r} is not allowed (allowed: {', '.join(map(repr, spec.choices))})"
    if spec.kind in ("int", "float"):
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            rel = ">" if spec.min_exclusive else ">="
            return None, f"{name} = {value!r} is out of range (must be {rel} {spec.min})"
        if spec.max is not None and value > spec.max:
            return None, f"{name} = {value!r} is out of range (must be <= {spec.max})"
    return value, None


def _validate_section(section, given, keys, errors) -> dict:
    out = {}
    for key in given:
        if key not in keys:
            errors.append(f"unknown key {section}.{key} (allowed: {', '.join(sorted(keys))})")
    for key, spec in keys.items():
        name = f"{section}.{key}"
        if key not in given:
            if spec.default is REQUIRED:
                errors.append(f"missing required key {name} ({spec.kind}{': ' + spec.help if spec.help else ''})")
            else:
                out[key] = copy.deepcopy(spec.default)
            continue
        value, error = _check_value(name, given[key], spec)
        if error:
            errors.append(error)
        else:
            out[key] = value
    return out


def validate(raw: dict, schema: dict) -> dict:
    """Check `raw` against `schema` ({section: {key: Spec}}); return it with defaults filled."""
    errors = []
    out = {}
    for section in raw:
        if section not in schema:
            errors.append(f"unknown section [{section}] (allowed: {', '.join(sorted(schema))})")
        elif not isinstance(raw[section], dict):
            errors.append(f"[{section}] must be a table")
    for section, keys in schema.items():
        given = raw.get(section, {})
        if isinstance(given, dict):
            out[section] = _validate_section(section, given, keys, errors)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return out


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value); the value is read as TOML, else as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw_value = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    return section, key, value


def read_raw_config(path, overrides=()) -> dict:
    """The TOML of `path` with `--set` overrides applied, not validated (ConfigError if unreadable)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {text!r}: [{section}] is not a table")
        raw[section][key] = value
    return raw


def _load_on_this_rank(path, schema, overrides):
    return validate(read_raw_config(path, overrides), schema)


def load_config(path, schema: dict, overrides=(), comm=None) -> dict:
    """Read, override and validate on rank 0 of `comm`; every rank returns the same dict or raises."""
    return on_root(comm, lambda: _load_on_this_rank(path, schema, overrides), ConfigError)
