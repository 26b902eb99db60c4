"""Training data of `qftml fit` (DESIGN 1.5): qftml ensembles, .npy arrays and images, sharded over ranks.

Sources (one list, concatenated in the order given; configuration i of the data set is the i-th row
of that concatenation):
    *.h5 / *.hdf5    a qftml ensemble file: rows [skip:n_records] of /configs (n_cfg, *shape)
    *.npy            an array (n, *shape) of real numbers (any numeric dtype, read as float64)
    *.png / *.jpg / *.jpeg   one 2D image: converted to grey levels v in [0, 1] (8-bit: v = value/255;
                     RGB(A) by ITU-R 601 luma, alpha dropped), then phi = image_scale (2 v - 1), i.e.
                     black = -image_scale, white = +image_scale; row 0 of the image (its top) is
                     x_0 = 0, columns are x_1. With image_resize the image is resized (bilinear) to
                     the lattice first. `image_copies` noisy copies phi + image_noise * eta, eta
                     standard normals of the engine's Philox (purpose "fit_noise", counter (global
                     site, copy)): independent of the process grid.
Sharding: the data set is split into training configurations (the first n - n_holdout) and held-out
ones (the last n_holdout); replica r of R holds rows r, r + R, r + 2R, ... of each, and every rank
of a replica only its lattice block of those rows (hyperslab reads): no rank ever holds the whole
data set or a whole configuration of a large lattice. Memory per configuration and rank:
8 * local volume bytes.

Exports:
    DataIndex                         sources (path, kind, rows, field hint), n, shape
    inspect_data(data_cfg, shape, field, comm) -> DataIndex   rank 0 opens every source, every rank
                                      gets the same index or the same ConfigError
    split_rows(n, holdout) -> (train, held_out)   global row indices (holdout: fraction in [0, 1))
    load_shard(index, rows, lattice, data_cfg) -> (len(rows), *local_shape) float64 block
    check_shards(shards, index, field, comms)   NaN/inf and ising/real consistency over every rank:
                                      ConfigError naming the file and row, the same on every rank
    image_to_field(path, shape, scale, resize) -> global array (serial; images are small)
    SUFFIXES                          {kind: file name endings}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field as dc_field

import numpy as np
from mpi4py import MPI

SUFFIXES = {"ensemble": (".h5", ".hdf5"), "npy": (".npy",), "image": (".png", ".jpg", ".jpeg")}


def _kind(path):
    low = str(path).lower()
    for kind, ends in SUFFIXES.items():
        if low.endswith(ends):
            return kind
    return None


@dataclass
class DataIndex:
    shape: tuple
    sources: list = dc_field(default_factory=list)  # dicts: path, kind, rows (count), start (row in file), field
    n: int = 0

    def locate(self, row: int):
        """(source, row within the source) of global row `row`."""
        base = 0
        for src in self.sources:
            if row < base + src["rows"]:
                return src, row - base
            base += src["rows"]
        raise IndexError(f"data row {row} out of range (0..{self.n - 1})")


def _config_error(msg):
    from qftml.config import ConfigError

    return ConfigError(msg)


def image_to_field(path, shape, scale=1.0, resize=False) -> np.ndarray:
    """phi = scale (2 v - 1) of an image file, v its grey level in [0, 1] (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            grey = img.convert("L") if img.mode not in ("L", "I;16", "I", "F") else img
            if tuple(shape) != (grey.height, grey.width):
                if not resize:
                    raise _config_error(f"data file {path}: image of {grey.height} x {grey.width} pixels does not "
                                        f"match lattice.shape = {list(shape)} (set data.image_resize = true to "
                                        f"resize it)")
                grey = grey.convert("F").resize((shape[1], shape[0]), Image.BILINEAR)
            v = np.asarray(grey, dtype=float)
            top = 65535.0 if img.mode in ("I;16", "I") else 1.0 if img.mode == "F" else 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise _config_error(f"data file {path}: not a readable image: {e}") from None
    return scale * (2.0 * v / top - 1.0)


def _inspect_source(path, kind, shape, cfg):
    if not os.path.exists(path):
        raise _config_error(f"data.files: {path}: no such file")
    if kind == "ensemble":
        from qftml.io.ensembles import EnsembleFileError, open_ensemble

        try:
            with open_ensemble(path) as ens:
                if not ens.has_configs:
                    raise _config_error(f"data file {path}: the ensemble has no /configs (sampled with "
                                        f"output.configs = false?)")
                cshape = tuple(ens.configs.shape[1:])
                rows = ens.n_records - cfg["skip"]
                fld = ens.field
        except EnsembleFileError as e:
            raise _config_error(f"data file {path}: {e}") from None
        start = cfg["skip"]
    elif kind == "npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _config_error(f"data file {path}: not a readable .npy array: {e}") from None
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
            raise _config_error(f"data file {path}: dtype {arr.dtype} is not real numbers")
        if arr.ndim == len(shape):   # a single configuration
            cshape, rows = tuple(arr.shape), 1
        else:
            cshape, rows = tuple(arr.shape[1:]), (arr.shape[0] if arr.ndim else 0)
        start, fld = 0, None
    else:
        image_to_field(path, shape, cfg["image_scale"], cfg["image_resize"])  # readable, right size
        cshape, rows, start, fld = tuple(shape), cfg["image_copies"], 0, "real"
    if cshape != tuple(shape):
        raise _config_error(f"data file {path}: configurations of shape {list(cshape)} do not match "
                            f"lattice.shape = {list(shape)}")
    if rows <= 0:
        raise _config_error(f"data file {path}: no configurations" + (f" after data.skip = {cfg['skip']}"
                                                                        if kind == "ensemble" else ""))
    return {"path": path, "kind": kind, "rows": int(rows), "start": int(start), "field": fld}


def inspect_data(cfg: dict, shape, field: str, comm=None) -> DataIndex:
    """Check every source of [data] on rank 0; every rank returns the same DataIndex or raises the
    same ConfigError (missing, unreadable, empty, wrong shape, ising data for a real model ...)."""
    from qftml.collective import on_root
    from qftml.config import ConfigError

    def inspect():
        if not cfg["files"]:
            raise _config_error("data.files is empty (give ensemble .h5, .npy or image files)")
        index = DataIndex(shape=tuple(shape))
        for path in cfg["files"]:
            kind = _kind(path)
            if kind is None:
                raise _config_error(f"data.files: {path}: unknown file type (allowed endings: "
                                    f"{', '.join(e for ends in SUFFIXES.values() for e in ends)})")
            if kind == "image" and len(shape) != 2:
                raise _config_error(f"data.files: {path}: images need a 2D lattice, lattice.shape = {list(shape)}")
            src = _inspect_source(path, kind, shape, cfg)
            if src["field"] is not None and src["field"] != field:
                raise _config_error(f"data file {path}: {src['field']} data, but model.field = {field!r} "
                                    f"(fit {src['field']} data with a {src['field']} model)")
            index.sources.append(src)
        index.n = sum(s["rows"] for s in index.sources)
        if cfg["limit"]:
            _limit(index, cfg["limit"])
        return index

    return on_root(comm, inspect, ConfigError)


def _limit(index, limit):
    left = int(limit)
    kept = []
    for src in index.sources:
        if left <= 0:
            break
        src = dict(src, rows=min(src["rows"], left))
        left -= src["rows"]
        kept.append(src)
    index.sources, index.n = kept, sum(s["rows"] for s in kept)


def split_rows(n: int, holdout: float):
    """(training rows, held-out rows): the last round(holdout * n) rows are held out."""
    n_hold = int(round(holdout * n))
    rows = np.arange(n, dtype=np.int64)
    return rows[:n - n_hold], rows[n - n_hold:]


def _image_block(src, copies, lattice, cfg, seed):
    from qftml.engine import rng
    from qftml.learning.model import global_site_index

    img = lattice.local_block(image_to_field(src["path"], lattice.shape, cfg["image_scale"], cfg["image_resize"]))
    out = np.empty((len(copies),) + img.shape)
    index = global_site_index(lattice) if cfg["image_noise"] > 0 else None
    for j, c in enumerate(copies):
        out[j] = img
        if index is not None:
            out[j] += cfg["image_noise"] * rng.normal(seed, "fit_noise", index, int(c))
    return out


def load_shard(index: DataIndex, rows, lattice, cfg: dict, seed: int = 0, chunk_bytes: int = 32 << 20) -> np.ndarray:
    """This rank's lattice block of the global data rows `rows` (sorted), as (len(rows), *local_shape).
    HDF5 and .npy sources are read by hyperslabs in chunks of contiguous rows."""
    import h5py

    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(lattice.local_shape))
    sl = tuple(lattice.local_slices)
    base = 0
    step = max(1, chunk_bytes // (8 * max(lattice.local_volume, 1)))
    for src in index.sources:
        sel = np.nonzero((rows >= base) & (rows < base + src["rows"]))[0]
        if sel.size == 0:
            base += src["rows"]
            continue
        local_rows = rows[sel] - base + src["start"]
        if src["kind"] == "image":
            out[sel] = _image_block(src, rows[sel] - base, lattice, cfg, seed)
        elif src["kind"] == "npy":
            arr = np.load(src["path"], mmap_mode="r", allow_pickle=False)
            if arr.ndim == lattice.ndim:
                arr = arr[None]
            for k in range(0, len(sel), step):
                part = local_rows[k:k + step]
                out[sel[k:k + step]] = arr[(part,) + sl]
        else:
            with h5py.File(src["path"], "r", locking=False) as f:
                ds = f["configs"]
                for k in range(0, len(sel), step):
                    part = local_rows[k:k + step]
                    lo, hi = int(part[0]), int(part[-1]) + 1
                    block = ds[(slice(lo, hi),) + sl] if hi - lo <= 4 * len(part) else None
                    out[sel[k:k + step]] = block[part - lo] if block is not None else \
                        np.stack([ds[(int(i),) + sl] for i in part])
        base += src["rows"]
    return out


def check_shards(shards, index: DataIndex, field: str, comms) -> None:
    """Every rank checks its blocks: NaN/inf anywhere, and for an ising model values other than +-1
    (for a real model: data that are all +-1, i.e. ising data). The first bad global row is agreed
    with one allreduce, so every rank raises the same ConfigError."""
    n = index.n
    bad = n
    ising_like = True
    for rows, block in shards:
        finite = np.isfinite(block).reshape(len(rows), -1).all(axis=1)
        if not finite.all():
            bad = min(bad, int(rows[np.argmin(finite)]))
        if block.size:
            ising_like = ising_like and bool(np.all(np.abs(block) == 1.0))
    bad = comms.world.allreduce(bad, op=MPI.MIN)
    if bad < n:
        src, row = index.locate(bad)
        raise _config_error(f"data file {src['path']}: configuration {row + src['start']} contains NaN or inf")
    ising_like = comms.world.allreduce(ising_like, op=MPI.LAND)
    if field == "ising" and not ising_like:
        raise _config_error("model.field = 'ising' but the data are not all +-1 (real data: use model.field = 'real')")
    if field == "real" and ising_like:
        raise _config_error("the data are all +-1 (ising data) but model.field = 'real' (use model.field = 'ising')")


__all__ = ["DataIndex", "inspect_data", "split_rows", "load_shard", "check_shards", "image_to_field", "SUFFIXES"]
