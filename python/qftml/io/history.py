"""Training histories in HDF5: per-epoch scalars of a trainer (`learn`, `fit`, `network`).

Exports:
    History(path, comm=None, per_epoch=("history",), sparse=())   world rank 0 writes, other ranks
                                      return at once; the file is reopened per call, so that other
                                      writers (e.g. BlockFile hyperslabs of couplings) can use it between
        .create(attrs)                a new file (replacing any old one) with root attributes
        .append(values, group=None)   one row: {name: scalar} appended to <group>/<name> (names may
                                      contain "/"); group defaults to per_epoch[0]
        .set_attrs(group, attrs)      attributes of a group (created if missing)
        .truncate(n_epochs)           resume: per-epoch groups keep their first n_epochs rows, sparse
                                      groups (rows at chosen epochs, with an `epoch` column) the rows
                                      with epoch < n_epochs; collective; EnsembleFileError (every rank)
                                      for a damaged file or per-epoch rows fewer than n_epochs
        .exists()                     whether the file is there (on every rank)
    read_history(path, group="history") -> {name: array}   every dataset below the group (plain h5py)

Layout: every appended name is a resizable float64 dataset (n_rows,), chunked by 256 rows.
A per-epoch group holds one row per finished epoch (row i = epoch i of the run); a sparse group
holds one row per estimate (e.g. /free_energy at every f_every epochs) and an `epoch` dataset.
"""
from __future__ import annotations

import os

import numpy as np


def _open(path, mode):
    import h5py

    return h5py.File(path, mode)


class History:
    def __init__(self, path, comm=None, per_epoch=("history",), sparse=()):
        self.path = str(path)
        self.comm = comm
        self.is_root = comm is None or comm.rank == 0
        self.per_epoch, self.sparse = tuple(per_epoch), tuple(sparse)

    def exists(self) -> bool:
        found = os.path.exists(self.path) if self.is_root else None
        return found if self.comm is None else self.comm.bcast(found, root=0)

    def create(self, attrs: dict) -> None:
        if not self.is_root:
            return
        with _open(self.path, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v

    def append(self, values: dict, group: str | None = None) -> None:
        if not self.is_root:
            return
        group = group or self.per_epoch[0]
        with _open(self.path, "a") as f:
            for name, v in values.items():
                key = f"{group}/{name}"
                if key not in f:
                    f.create_dataset(key, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
                ds = f[key]
                ds.resize((ds.shape[0] + 1,))
                ds[-1] = v

    def set_attrs(self, group: str, attrs: dict) -> None:
        if not self.is_root:
            return
        with _open(self.path, "a") as f:
            g = f.require_group(group)
            for k, v in attrs.items():
                g.attrs[k] = v

    def truncate(self, n_epochs: int) -> None:
        """Collective when a comm was given: a damaged file, or per-epoch datasets shorter than
        n_epochs rows, raise the same EnsembleFileError on every rank, before anything is changed."""
        from qftml.io.ensembles import EnsembleFileError

        error = None
        if self.is_root:
            try:
                self._truncate(n_epochs)
            except EnsembleFileError as e:
                error = str(e)
            except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
                error = f"{self.path}: damaged history file (truncated or corrupt?): {e}"
        if self.comm is not None and self.comm.size > 1:
            error = self.comm.bcast(error, root=0)
        if error:
            raise EnsembleFileError(error)

    def _truncate(self, n_epochs: int) -> None:
        import h5py

        from qftml.io.ensembles import EnsembleFileError

        with _open(self.path, "r") as f:  # check first: nothing is changed in a file that is refused
            short = []
            for group in self.per_epoch:
                if group in f:
                    f[group].visititems(lambda name, obj: short.append(f"/{group}/{name}") if isinstance(
                        obj, h5py.Dataset) and (obj.ndim == 0 or obj.shape[0] < n_epochs) else None)
            if short:
                raise EnsembleFileError(f"{self.path}: {', '.join(short[:5])} hold fewer rows than the "
                                        f"{n_epochs} epochs of the checkpoint (truncated or edited file)")
        with _open(self.path, "a") as f:
            for group in self.per_epoch:
                if group not in f:
                    continue

                def cut(name, obj):
                    if isinstance(obj, h5py.Dataset) and obj.maxshape[0] is None:
                        obj.resize((min(n_epochs, obj.shape[0]),))
                f[group].visititems(cut)
            for group in self.sparse:
                if group not in f or "epoch" not in f[group]:
                    continue
                keep = f[f"{group}/epoch"][()] < n_epochs
                for ds in f[group].values():
                    if isinstance(ds, h5py.Dataset) and ds.shape == keep.shape:
                        data = ds[()][keep]
                        ds.resize((len(data),))
                        ds[...] = data


def read_history(path, group: str = "history") -> dict:
    """{name: array} of every dataset below `group` (names relative to it, e.g. "couplings/w/mean")."""
    import h5py

    out = {}
    with _open(path, "r") as f:
        g = f[group]
        g.visititems(lambda name, obj: out.__setitem__(name, np.asarray(obj[()]))
                     if isinstance(obj, h5py.Dataset) else None)
    return out


__all__ = ["History", "read_history"]
