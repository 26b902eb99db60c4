"""TOML configurations: parsing, `--set` overrides and validation before any work.

Exports:
    Spec(kind, default=REQUIRED, choices=None, min=None, max=None, help="", renamed=None)   one key's
                                      contract; renamed {old value: new value}: accepted with a printed note
    ConfigError                       bad configuration; its message names every bad key
    load_config(path, schema, overrides=(), comm=None) -> dict   validated config, defaults filled
    read_raw_config(path, overrides=()) -> dict   the TOML with overrides, not validated
    validate(raw, schema) -> dict     the same for an already-parsed dict
    LATTICE, ACTION, SAMPLER, OUTPUT  the shared section schemas of DESIGN 3 (OUTPUT: path, overwrite)
    check_cluster(sampler, ranks_per_chain)   ConfigError for cluster settings a chain cannot run
    check_sweeps(sampler, section="sampler")  ConfigError unless sweeps is a multiple of every
    output_problems(files, overwrite, key, value, hint="", require=()) -> [message]   (one rank, no writes)
    check_outputs(files, overwrite, comm, key="output.path", value=None, hint="", require=())
                                      the one output rule of every command, before any work: every
                                      file can be written (its directory exists or can be made and is
                                      writable, the path is no directory) and, unless `overwrite`
                                      (output.overwrite = true), none exists; every file of `require`
                                      exists (--resume; entries may be (path, label)). ConfigError
                                      on every rank; makes missing directories only when nothing is wrong

Kinds: "int", "float", "str", "bool", "list[int]", "list[float]", "list[str]", "list[list[int]]",
"table" (free-form sub-table). Numbers must be finite (nan and inf are refused everywhere); ints
lie in [-2^63, 2^63) unless their Spec says otherwise (seeds: [0, 2^64)). Rank 0 reads and validates,
then broadcasts the verdict, so every rank agrees and raises the same ConfigError.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any

from qftml.collective import on_root

REQUIRED = object()
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1      # an int key's default range (C++ int64)
SEED_MAX = 2 ** 64 - 1                          # seeds are the engine's uint64


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
    renamed: dict | None = None


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
    "algorithm": Spec("str", "metropolis", choices=("metropolis", "independence"), renamed={"heatbath": "independence"},
                      help="metropolis (step tuned while thermalising) or independence (independence "
                           "Metropolis-Hastings from a fit to the single-site conditional; was 'heatbath')"),
    "sweeps": Spec("int", 1000, min=1, help="sweeps after thermalisation"),
    "thermalize": Spec("int", 1000, min=0, help="thermalisation sweeps (Metropolis step tuned here)"),
    "every": Spec("int", 1, min=1, help="sweeps between stored configurations"),
    "hits": Spec("int", 1, min=1, help="Metropolis hits per site and sweep"),
    "seed": Spec("int", 0, min=0, max=SEED_MAX),
    "step": Spec("float", 1.0, min=0.0, min_exclusive=True, help="initial Metropolis step"),
    "start": Spec("str", "hot", choices=("hot", "cold")),
    "checkpoint_every": Spec("int", 100, min=0, help="sweeps between checkpoints (0: only at the end)"),
    "cluster": Spec("str", "none", choices=("none", "swendsen-wang", "wolff"),
                    help="cluster update of the signs of phi (DESIGN 1.2b); wolff needs one rank per chain"),
    "cluster_every": Spec("int", 1, min=1, help="local sweeps per cluster update (it counts as part of a sweep)"),
}
OUTPUT = {
    "path": Spec("str", help="output HDF5 file"),
    "overwrite": Spec("bool", False, help="replace existing output files (false: refuse; --resume continues them)"),
}


def check_cluster(sampler: dict, ranks_per_chain: int) -> None:
    """Raise ConfigError if the [sampler] cluster settings cannot run on chains of this many ranks."""
    if sampler.get("cluster") == "wolff" and ranks_per_chain > 1:
        raise ConfigError(f"sampler.cluster = 'wolff' grows one cluster at a time and needs the whole lattice on "
                          f"one rank, but a chain here runs on {ranks_per_chain} ranks: use "
                          f"sampler.cluster = 'swendsen-wang' (any process grid) or one rank per chain")


def check_sweeps(sampler: dict, section: str = "sampler") -> None:
    """ConfigError unless sweeps is a multiple of every (record j is taken after sweep T + (j+1) every)."""
    if sampler["sweeps"] % sampler["every"]:
        raise ConfigError(f"{section}.sweeps = {sampler['sweeps']} must be a multiple of "
                          f"{section}.every = {sampler['every']}")


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
    bad = _non_finite(value)
    if bad is not None:
        return None, f"{name} = {bad!r} is not a finite number"
    if spec.renamed and value in spec.renamed:
        print(f"note: {name} = {value!r} is deprecated, use {spec.renamed[value]!r} (the same sampler; "
              f"the old name will go)", file=sys.stderr, flush=True)
        value = spec.renamed[value]
    if spec.choices is not None and value not in spec.choices:
        return None, f"{name} = {value!r} is not allowed (allowed: {', '.join(map(repr, spec.choices))})"
    if spec.kind in ("int", "float"):
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            rel = ">" if spec.min_exclusive else ">="
            return None, f"{name} = {value!r} is out of range (must be {rel} {spec.min})"
        if spec.max is not None and value > spec.max:
            return None, f"{name} = {value!r} is out of range (must be <= {spec.max})"
    for v in _ints(value, spec.kind):
        if not INT_MIN <= v <= INT_MAX and not (spec.max is not None and spec.min is not None
                                                 and spec.min <= v <= spec.max):
            return None, f"{name} = {v!r} is out of range (must lie in [-2^63, 2^63 - 1])"
    return value, None


def _non_finite(value):
    """The first nan/inf in a number or (nested) list of numbers, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if isinstance(value, list):
        return next((b for b in map(_non_finite, value) if b is not None), None)
    return None


def _ints(value, kind):
    if kind == "int":
        return [value]
    if kind.startswith("list[") and "int" in kind:
        return [v for v in _flatten(value) if isinstance(v, int)]
    return []


def _flatten(value):
    for v in value:
        if isinstance(v, list):
            yield from _flatten(v)
        else:
            yield v


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
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                          f"offset {e.start}): is it a TOML file?") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {text!r}: [{section}] is not a table")
        raw[section][key] = value
    return raw


def _writable_parent(directory):
    """(nearest existing ancestor of `directory`, problem or None) for creating files in it."""
    probe = directory
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return probe, f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return probe, f"directory {probe} is not writable"
    return probe, None


def output_problems(files, overwrite, key, value, hint="", require=()) -> list:
    """What stops `files` from being written (module docstring; rank-local, writes nothing)."""
    problems = []
    head = f"{key} = {value!r}: "
    required = [(p, "file") if isinstance(p, (str, os.PathLike)) else p for p in require]
    for path, label in required:
        if not os.path.exists(path):
            problems.append(head + f"--resume: no {label} {path} (run without --resume to start)")
    require = [p for p, _ in required]
    for path in files:
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            problems.append(head + f"{path} is a directory")
            continue
        if os.path.lexists(path) and path not in require:
            if not overwrite:
                problems.append(head + f"{path} exists" + (hint or " (set output.overwrite = true to replace it)"))
                continue
        _, problem = _writable_parent(directory)
        if problem:
            problems.append(head + problem)
        elif os.path.exists(path) and not os.access(path, os.W_OK):
            problems.append(head + f"{path} is not writable")
    return list(dict.fromkeys(problems))


def check_outputs(files, overwrite, comm=None, key="output.path", value=None, hint="", require=()) -> None:
    """The output rule (module docstring): ConfigError on every rank, or the directories made."""
    files = [os.fspath(p) for p in files]

    def check():
        problems = output_problems(files, overwrite, key, files[0] if value is None else value, hint, require)
        if problems:
            raise ConfigError("\n  ".join(["cannot write the outputs:"] + problems) if len(problems) > 1
                              else problems[0])
        for path in files:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"{key} = {value or path!r}: cannot create directory {directory}: "
                                  f"{e.strerror or e}") from None

    on_root(comm, check, ConfigError)


def _load_on_this_rank(path, schema, overrides):
    return validate(read_raw_config(path, overrides), schema)


def load_config(path, schema: dict, overrides=(), comm=None) -> dict:
    """Read, override and validate on rank 0 of `comm`; every rank returns the same dict or raises."""
    return on_root(comm, lambda: _load_on_this_rank(path, schema, overrides), ConfigError)
