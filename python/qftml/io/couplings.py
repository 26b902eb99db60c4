"""Couplings files: /couplings/<w|g|a|b|r> (DESIGN 3), read and written by hyperslabs.

Exports (the coupling families are qftml.engine.action.FAMILIES):
    couplings_attrs(action) -> dict            attributes of the /couplings group (field, extra_offsets)
    read_couplings(path, lattice) -> (local, attrs)   this rank's block of every family + group attributes
    action_from_couplings(path, lattice, field=None) -> Action   the inhomogeneous action of a file
    write_couplings(path, action, write_path=None, mode="w", group="couplings")   /couplings of an
                                               Action, each rank writing its block; mode "a" writes
                                               into an existing file (replacing the group's datasets)
    write_coupling_blocks(path, lattice, couplings, attrs, write_path=None, mode="w", group="couplings")
                                               the same for a dict of local blocks and
                                               group attributes; collective over lattice.comm only
                                               (e.g. replica 0's domain while other replicas wait)
    write_global_couplings(path, couplings, extra_offsets=(), field="real")   serial: global arrays
    couplings_digest(path) -> str              sha256 of the couplings' values (streamed on rank 0)

Layout of the group /couplings (the same in ensemble files and the outputs of learn/fit/network):
    w  shape + (d,)        w[x, mu] couples phi_x phi_{x+e_mu}
    g  shape + (n_extra,)  g[x, l] couples phi_x phi_{x+e_l} for the extra offsets (attribute)
    a, b, r  shape         a phi^2 + b phi^4 + r phi at each site
A family may also be a scalar dataset (shape ()), meaning the same value everywhere; a missing
family is 0. Attributes: `field` ("real" | "ising"), `extra_offsets` (JSON list of offsets).
Every rank reads only its own hyperslab; no rank ever holds the global arrays.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from qftml.engine.action import FAMILIES
from qftml.io.ensembles import BlockFile, EnsembleFileError, _h5open, choose_write_path


def couplings_attrs(action) -> dict:
    return {"field": action.field_type, "extra_offsets": json.dumps([list(o) for o in action.extra_offsets])}


def _group_attrs(grp):
    field = grp.attrs.get("field", "real")
    field = field.decode() if isinstance(field, bytes) else str(field)
    raw = grp.attrs.get("extra_offsets", "[]")
    raw = raw.decode() if isinstance(raw, bytes) else raw
    try:
        extra = [list(map(int, o)) for o in (json.loads(raw) if isinstance(raw, str) else raw)]
    except (ValueError, TypeError):
        raise EnsembleFileError(f"/couplings attribute extra_offsets = {raw!r} is not a list of offsets") from None
    return {"field": field, "extra_offsets": extra}


def read_couplings(path, lattice):
    """This rank's block of each family (missing families are 0) and the group's attributes.
    Raises EnsembleFileError naming the dataset when a shape does not fit the lattice."""
    shape, d = tuple(lattice.shape), lattice.ndim
    local = {}
    with _h5open(path, "r") as f:
        try:
            if "couplings" not in f:
                raise EnsembleFileError(f"{path}: no /couplings group (expected /couplings/<w|g|a|b|r>)")
            grp = f["couplings"]
            attrs = _group_attrs(grp)
            unknown = sorted(set(grp.keys()) - set(FAMILIES))
            if unknown:
                raise EnsembleFileError(f"{path}: unknown datasets /couplings/{unknown} "
                                        f"(allowed: {', '.join(FAMILIES)})")
            n_extra = len(attrs["extra_offsets"])
            trailing = {"w": (d,), "g": (n_extra,), "a": (), "b": (), "r": ()}
            for fam in FAMILIES:
                if fam not in grp:
                    local[fam] = 0.0
                    continue
                ds = grp[fam]
                if ds.shape == ():
                    local[fam] = float(ds[()])
                elif ds.shape == shape + trailing[fam]:
                    local[fam] = ds[lattice.local_slices]
                else:
                    raise EnsembleFileError(
                        f"{path}: /couplings/{fam} has shape {ds.shape}, expected {shape + trailing[fam]} "
                        f"for lattice {list(shape)} (or a scalar)")
        except (KeyError, OSError, RuntimeError) as e:
            raise EnsembleFileError(f"{path}: damaged couplings (truncated or corrupt?): {e}") from None
    return local, attrs


def action_from_couplings(path, lattice, field=None):
    """The Action of a couplings file on `lattice`; `field` overrides the file's field type."""
    from qftml.engine.action import Action

    local, attrs = read_couplings(path, lattice)
    return Action(lattice, local["w"], local["a"], local["b"], local["r"], g=local["g"],
                  extra_offsets=attrs["extra_offsets"], field=field or attrs["field"])


def write_couplings(path, action, write_path=None, mode="w", group="couplings"):
    """/couplings of `action` (collective; each rank writes its block). mode "w" makes a new
    couplings-only file, mode "a" writes into an existing one."""
    write_coupling_blocks(path, action.lattice, action.couplings(), couplings_attrs(action), write_path, mode, group)


def write_coupling_blocks(path, lattice, couplings: dict, attrs: dict, write_path=None, mode="w",
                          group="couplings"):
    """<group>/<family> from this rank's blocks (local_shape + trailing), with the group
    attributes `attrs` (e.g. couplings_attrs). Collective over lattice.comm; datasets already in the
    group are replaced."""
    shape = tuple(lattice.shape)
    bf = BlockFile(path, mode, lattice, write_path or choose_write_path(lattice.comm))
    try:
        for fam, local in couplings.items():
            local = np.asarray(local, dtype=float)
            if local.shape[:lattice.ndim] != tuple(lattice.local_shape):
                raise ValueError(f"couplings {fam}: a block of shape {local.shape}, not local_shape + trailing")
            trailing = local.shape[lattice.ndim:]
            name = f"{group}/{fam}"
            if bf.owns_file and name in bf.file:
                del bf.file[name]
            bf.create(name, shape + trailing, compression="gzip")
            bf.write_blocks(name, (), local)
        bf.set_attrs(group=group, **attrs)
    finally:
        bf.close()


def write_global_couplings(path, couplings: dict, extra_offsets=(), field="real"):
    """Serial helper (tests, small lattices): write global arrays or scalars as /couplings."""
    import h5py

    with h5py.File(path, "w") as f:
        grp = f.create_group("couplings")
        for fam, value in couplings.items():
            if fam not in FAMILIES:
                raise ValueError(f"unknown coupling family {fam!r} (allowed: {', '.join(FAMILIES)})")
            grp.create_dataset(fam, data=np.asarray(value, dtype=float))
        grp.attrs["field"] = field
        grp.attrs["extra_offsets"] = json.dumps([list(map(int, o)) for o in extra_offsets])


def couplings_digest(path) -> str:
    """sha256 over names, shapes and values of /couplings/*, read in slabs of at most ~8 MB."""
    h = hashlib.sha256()
    with _h5open(path, "r") as f:
        try:
            grp = f["couplings"]
            for key in ("field", "extra_offsets"):
                h.update(repr(grp.attrs.get(key)).encode())
            for fam in sorted(grp.keys()):
                ds = grp[fam]
                h.update(f"{fam}{ds.shape}".encode())
                if ds.shape == ():
                    h.update(np.float64(ds[()]).tobytes())
                    continue
                row = max(1, int(np.prod(ds.shape[1:])) * 8)
                step = max(1, (8 << 20) // row)
                for i in range(0, ds.shape[0], step):
                    h.update(np.ascontiguousarray(ds[i:i + step], dtype=np.float64).tobytes())
        except (KeyError, OSError, RuntimeError) as e:
            raise EnsembleFileError(f"{path}: damaged couplings (truncated or corrupt?): {e}") from None
    return h.hexdigest()
