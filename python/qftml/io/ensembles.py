"""HDF5 ensemble files (DESIGN 3): schema, scalable hyperslab writing, crash-safe appends, reading.

Exports:
    FORMAT, FORMAT_VERSION           the value of the root attributes `format`, `format_version`
    SUPPORTED_FORMAT_VERSIONS        the format versions this version reads (others are refused)
    check_ensemble_file(f, path, append=False) -> (attrs, n_records)   the integrity rules of an
                                      open h5py file: format, version, n_records, rows, shapes
    EnsembleFileError                 a missing, truncated or corrupt file (message for the user)
    Ensemble                          THE ensemble container (files and memory): observables, attrs,
                                      shape, couplings by hyperslab, lazy configs, skip(therm)
    open_ensemble(path) -> Ensemble   an ensemble file, read lazily (also a context manager)
    choose_write_path(comm)           "mpio" if h5py has MPI, else "rank0-blocks" ($QFTML_WRITE_PATH forces one)
    BlockFile(path, mode, lattice, write_path)   an HDF5 file that every rank of the lattice writes:
                                      .create(name, shape, chunks, maxshape)  .write_blocks(name, lead, local)
    EnsembleWriter.create(path, lattice, attrs, observable_layout, couplings, store_configs, ...)
    EnsembleWriter.reopen(path, lattice, n_records, ...)   continue a file (resume), truncated to n_records
        .append(local_configs, observables)   one batch: data, flush, then the record count, flush
        .set_attrs(**attrs)  .close()
    observable_layout(lattice, action) -> {name: trailing shape}   every per-configuration observable
    stack_observables(list_of_measure_dicts, layout) -> {name: array}
    read_observables(path) -> dict    open_ensemble(path).observables: /observables/<name>[:n_records]
    read_configs(path, start=0, stop=None) -> array   /configs[start:stop] (small volumes only)
    read_attrs(path) -> dict          root attributes, JSON strings decoded
    SCALAR_OBSERVABLES                the scalar names of qftml.measure stored per record
    fsync_path(path)                  fsync a file or directory by name
    is_io_failure(exc) -> bool        an OSError, or an h5py RuntimeError from a failed system or MPI-IO call
    io_error_message(exc) -> str      the OS reason in it ("No space left on device (errno ENOSPC)")

Schema (documented in docs/ensembles.md):
    /configs              (n_cfg, *shape) float64, global lexicographic site order (optional)
    /observables/<name>   (n_cfg,) float64 for every scalar of qftml.measure plus `sweep` (int64)
    /observables/slice_sums  (n_cfg, L0)
    /couplings/<w|g|a|b|r>   w: shape + (d,), g: shape + (n_extra,), a, b, r: shape
    root attributes       n_records (records whose data are flushed), complete, action, lattice,
                          sampler, seed, process_grid, n_ranks, package_version, start_time,
                          end_time, write_path, runs (JSON list of every invocation), ...

Crash safety: datasets are chunked and resizable; a batch is written and flushed before the
attribute n_records is raised and flushed again, so after SIGKILL every record below n_records is
on disk. Readers must use rows [:n_records] (Ensemble and the read_* helpers do).

Scalable writing: no rank holds the global lattice. With "mpio" every rank writes its hyperslab
collectively; with "rank0-blocks" (h5py without MPI, e.g. the pip wheel) rank 0 owns the open
file and writes each rank's hyperslab, received one rank at a time.
"""
from __future__ import annotations

import contextlib
import json
import os

import h5py
import numpy as np

from qftml.collective import TAGS

FORMAT = "qftml-ensemble"
FORMAT_VERSION = 2  # 2: RNG counters use all 64 bits of the sweep; "independence" was "heatbath" (docs/ensembles.md)
SUPPORTED_FORMAT_VERSIONS = (1, 2)
SCALAR_OBSERVABLES = ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "action", "sum_links_nn")


class EnsembleFileError(ValueError):
    """An ensemble or checkpoint file that cannot be used; the message is for the user."""


def choose_write_path(comm) -> str:
    """'mpio' (collective MPI-IO) when h5py was built with MPI and there are several ranks; the
    environment variable QFTML_WRITE_PATH = mpio | rank0-blocks chooses one (tests of both paths)."""
    forced = os.environ.get("QFTML_WRITE_PATH", "")
    if forced == "rank0-blocks" or (forced == "mpio" and h5py.get_config().mpi):
        return forced
    if forced:
        raise EnsembleFileError(f"QFTML_WRITE_PATH = {forced!r}: not 'mpio' or 'rank0-blocks'"
                                + (" (h5py was built without MPI: no mpio)" if forced == "mpio" else ""))
    return "mpio" if h5py.get_config().mpi and comm.size > 1 else "rank0-blocks"


def is_io_failure(e: BaseException) -> bool:
    """An OSError, or an h5py RuntimeError caused by a failed system call (e.g. "Can't flush cache
    (file write failed: ... errno = 28 ...)"), or by a failed MPI-IO call on the mpio path ("Unable to
    set dataset extent (MPI_File_write_at_all failed: ... Other I/O error No space left on device')")."""
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and ("errno = " in str(e) or "MPI_File_" in str(e))


def io_error_message(e: BaseException) -> str:
    """The operating system's reason inside an OSError from h5py (e.g. 'No space left on device')."""
    import errno as _errno
    import re

    code = getattr(e, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(e))
        code = int(found.group(1)) if found else None
    if code is None:  # MPI-IO (ROMIO) names the reason only by its text
        code = next((c for c in sorted(_errno.errorcode) if os.strerror(c) in str(e)), None)
    if code:
        return f"{os.strerror(code)} (errno {_errno.errorcode.get(code, code)})"
    return str(e)


def _h5open(path, mode, **kw):
    """h5py.File with OSError turned into EnsembleFileError (no h5py traceback for the user)."""
    try:
        return h5py.File(path, mode, **kw)
    except FileNotFoundError:
        raise EnsembleFileError(f"{path}: no such file") from None
    except OSError as e:
        if mode in ("w", "x", "w-"):
            raise EnsembleFileError(f"{path}: cannot create the file: {io_error_message(e)}") from None
        raise EnsembleFileError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None


@contextlib.contextmanager
def _open_file(path):
    """The ensemble file as an h5py.File, read-only; any HDF5 failure inside becomes EnsembleFileError."""
    f = _h5open(path, "r")
    try:
        check_ensemble_file(f, path)
        yield f
    except (OSError, KeyError, RuntimeError) as e:
        raise EnsembleFileError(f"{path}: damaged ensemble file (truncated or corrupt?): {e}") from None
    finally:
        with contextlib.suppress(Exception):
            f.close()


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _encode(v):
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return ""
    return v


def _int_attr(path, attrs, key):
    v = attrs.get(key)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise EnsembleFileError(f"{path}: attribute {key} = {v!r} is not an integer (damaged or edited file)")
    return int(v)


def _check_version(path, attrs):
    v = attrs.get("format_version")
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) \
            or int(v) not in SUPPORTED_FORMAT_VERSIONS:
        raise EnsembleFileError(f"{path}: format_version = {v!r} is not one this qftml reads "
                                f"{list(SUPPORTED_FORMAT_VERSIONS)} (written by a newer version, or edited)")


def _rows(f):
    """{dataset name: number of rows} of /configs and /observables/*."""
    out = {"configs": f["configs"]} if "configs" in f else {}
    if "observables" in f:
        out.update({f"observables/{k}": ds for k, ds in f["observables"].items()})
    return out


def _check_shape(path, f, attrs, datasets):
    """Every description of the lattice shape must agree with the data (/configs, /couplings/a;
    without them, with the first attribute that gives one)."""
    views = {}
    if "configs" in datasets:
        views["/configs"] = tuple(datasets["configs"].shape[1:])
    if "couplings" in f and "a" in f["couplings"] and f["couplings/a"].ndim:  # 0-d: the same everywhere
        views["/couplings/a"] = tuple(f["couplings/a"].shape)
    if isinstance(attrs.get("lattice"), dict) and "shape" in attrs["lattice"]:
        views["attribute lattice.shape"] = tuple(int(x) for x in attrs["lattice"]["shape"])
    for key in ("shape", "lattice_shape"):
        if key in attrs:
            views[f"attribute {key}"] = tuple(int(x) for x in np.atleast_1d(attrs[key]))
    if not views:
        return
    source, shape = next(iter(views.items()))
    bad = {k: list(v) for k, v in views.items() if v != shape}
    if "volume" in attrs and _int_attr(path, attrs, "volume") != int(np.prod(shape)):
        bad["attribute volume"] = attrs["volume"]
    slices = datasets.get("observables/slice_sums")
    if slices is not None and tuple(slices.shape[1:]) != (shape[0],):
        bad["/observables/slice_sums (per row)"] = list(slices.shape[1:])
    if bad:
        raise EnsembleFileError(f"{path}: " + ", ".join(f"{k} = {v}" for k, v in bad.items())
                                + f" disagree{'s' if len(bad) == 1 else ''} with the lattice {list(shape)} "
                                f"of {source} (damaged or edited file)")


def check_ensemble_file(f, path, append=False):
    """(decoded attributes, n_records) of an open ensemble file, after checking what readers and
    writers rely on: format and a known format_version, n_records an integer 0 <= n_records <= rows
    of every dataset of /configs and /observables, one lattice shape in the attributes and the
    datasets; with append=True also that the datasets are chunked and resizable (a resume grows them).
    Raises EnsembleFileError naming the file and what is wrong."""
    try:
        if f.attrs.get("format") != FORMAT:
            raise EnsembleFileError(f"{path}: not a qftml ensemble file (no format={FORMAT!r} attribute)")
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        _check_version(path, attrs)
        n = _int_attr(path, attrs, "n_records")
        if n < 0:
            raise EnsembleFileError(f"{path}: attribute n_records = {n} is negative (damaged or edited file)")
        datasets = _rows(f)
        short = sorted(k for k, ds in datasets.items() if ds.ndim == 0 or ds.shape[0] < n)
        if short:
            raise EnsembleFileError(f"{path}: {', '.join('/' + k for k in short)} hold fewer rows than "
                                    f"n_records = {n} (truncated or edited file)")
        if append:
            fixed = sorted(k for k, ds in datasets.items() if ds.chunks is None or ds.maxshape[0] is not None)
            if fixed:
                raise EnsembleFileError(f"{path}: {', '.join('/' + k for k in fixed)} cannot grow (not chunked "
                                        f"and resizable, as qftml writes them): damaged or rewritten file")
        _check_shape(path, f, attrs, datasets)
        return attrs, n
    except EnsembleFileError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise EnsembleFileError(f"{path}: damaged ensemble file (truncated or corrupt?): {e}") from None


def read_attrs(path) -> dict:
    """Root attributes of an ensemble file, JSON strings decoded into dicts/lists."""
    with _open_file(path) as f:
        return {k: _decode(v) for k, v in f.attrs.items()}


def read_observables(path) -> dict:
    """{name: array of the first n_records rows} for every dataset in /observables."""
    with open_ensemble(path) as ens:
        return dict(ens.observables)


def read_configs(path, start=0, stop=None) -> np.ndarray:
    """Rows [start:stop] of /configs, clipped to n_records. Loads global configurations: small volumes."""
    with open_ensemble(path) as ens:
        if not ens.has_configs:
            raise EnsembleFileError(f"{path}: configurations were not stored (output.configs = false)")
        return ens.configs[start:stop]


class _Rows:
    """Rows [start:stop] of an HDF5 dataset (/configs) indexed like an array, read only on access:
    v[i], v[a:b] and either with trailing slices, e.g. v[(i,) + lattice.local_slices] (a hyperslab)."""

    def __init__(self, ds, start, stop, path):
        self.ds, self.start, self.path = ds, int(start), path
        self.shape = (max(int(stop) - self.start, 0),) + tuple(ds.shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        i, rest = (idx[0], tuple(idx[1:])) if isinstance(idx, tuple) else (idx, ())
        n = self.shape[0]
        if isinstance(i, slice):
            a, b, step = i.indices(n)
            if step != 1:
                raise IndexError("configurations: only contiguous row ranges")
            lead = slice(self.start + a, self.start + max(a, b))
        else:
            i = int(i) + (n if int(i) < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"configuration {idx} out of range (0..{n - 1})")
            lead = self.start + i
        try:
            return self.ds[(lead,) + rest]
        except (OSError, KeyError, RuntimeError) as e:
            raise EnsembleFileError(f"{self.path}: damaged /configs (truncated or corrupt?): {e}") from None


def _shape_from_attrs(attrs):
    lat = attrs.get("lattice")
    if isinstance(lat, dict) and "shape" in lat:
        return tuple(int(x) for x in lat["shape"])
    for key in ("shape", "lattice_shape"):
        if key in attrs:
            return tuple(int(x) for x in np.atleast_1d(attrs[key]))
    return None


class Ensemble:
    """One Markov-chain ensemble of one action S, from a file (open_ensemble) or in memory.

    shape, ndim, volume          the lattice
    observables                  {name: (n,) or (n, k)} as stored: M, m, ..., link_sum_<l>, slice_sums,
                                 sweep (read on first use from a file, rows [:n_records])
    n_records                    number of records (configurations)
    attrs                        root attributes, decoded (empty in memory unless given)
    configs                      None, or anything indexable as configs[i, slices...] / configs[a:b]
                                 (a file's /configs is read lazily, one hyperslab at a time)
    couplings / couplings_path   S's couplings: {family: scalar or global array} in memory, or the
                                 file whose /couplings is read by hyperslabs (local_couplings)
    field, extra_offsets, offsets   S's field type and link offsets (unit vectors, then extras)
    name, path, label            for messages; skip(n) drops the first n records (thermalisation)
    In memory, an observable `link_sums` (n, n_links) is split into link_sum_<l> columns.
    A file-backed Ensemble keeps the file open until close() (or the end of a `with` block).
    """

    def __init__(self, shape, observables=None, couplings=None, *, attrs=None, extra_offsets=(), field="real",
                 configs=None, name="ensemble", path=None, couplings_path=None, n_records=None, _file=None):
        self.shape = tuple(int(s) for s in shape)
        self.attrs = dict(attrs or {})
        self.couplings = None if couplings is None else dict(couplings)
        self.couplings_path = couplings_path
        self.extra_offsets = [tuple(int(c) for c in e) for e in extra_offsets]
        self.field = field
        self.name, self.path = name, path
        self._file = _file
        if observables is None and _file is None:
            observables = {}
        self._observables = None if observables is None else _split_link_sums(observables)
        counts = {} if self._observables is None else {k: len(v) for k, v in self._observables.items()}
        if n_records is not None:
            counts["n_records"] = int(n_records)
        if configs is not None:
            if tuple(configs.shape[1:]) != self.shape:
                raise EnsembleFileError(f"{self.label}: configurations have shape {tuple(configs.shape[1:])}, "
                                        f"lattice is {self.shape}")
            counts["configs"] = configs.shape[0]
        if len(set(counts.values())) > 1:
            raise EnsembleFileError(f"{self.label}: datasets disagree on the number of configurations: {counts}")
        self.n_records = next(iter(counts.values())) if counts else 0
        self.configs = configs

    @classmethod
    def from_records(cls, records, shape, attrs=None, **kw) -> "Ensemble":
        """An in-memory Ensemble from a list of qftml.measure() dicts."""
        obs = {name: np.array([r[name] for r in records], dtype=float) for name in records[0]}
        return cls(shape, obs, attrs=attrs, **kw)

    # -- the lattice and the data ------------------------------------------------------------
    label = property(lambda self: self.path or self.name)
    ndim = property(lambda self: len(self.shape))
    volume = property(lambda self: int(np.prod(self.shape)))
    has_configs = property(lambda self: self.configs is not None)
    has_couplings = property(lambda self: self.couplings is not None or self.couplings_path is not None)

    @property
    def observables(self) -> dict:
        if self._observables is None:
            self._observables = self._read_observables()
        return self._observables

    def _read_observables(self):
        f = self._require_file()
        n = self.n_records
        try:
            if "observables" not in f:
                return {}
            obs = {name: ds[:n] for name, ds in f["observables"].items()}
        except (OSError, KeyError, RuntimeError) as e:
            raise EnsembleFileError(f"{self.path}: damaged ensemble file (truncated or corrupt?): {e}") from None
        short = sorted(k for k, v in obs.items() if len(v) < n)
        if short:
            raise EnsembleFileError(f"{self.path}: /observables/{short} hold fewer than n_records = {n} rows")
        return obs

    def _require_file(self):
        if self._file is None or not self._file.id.valid:
            raise EnsembleFileError(f"{self.label}: the ensemble file was closed")
        return self._file

    def iter_configs(self, chunk=64):
        """Global configurations in chunks of up to `chunk` records (small volumes only)."""
        for start in range(0, self.n_records, chunk):
            yield np.asarray(self.configs[start:start + chunk])

    @property
    def link_sums(self):
        """(n, n_links) stacked link_sum_<l> columns (in the order of `offsets`), or None."""
        obs = self.observables
        cols = sorted(int(k[9:]) for k in obs if k.startswith("link_sum_") and k[9:].isdigit())
        if not cols:
            return None
        if cols != list(range(len(cols))):
            raise EnsembleFileError(f"{self.label}: link sums stored for links {cols}: expected 0..{len(cols) - 1}")
        return np.stack([np.asarray(obs[f"link_sum_{c}"], dtype=float) for c in cols], axis=1)

    @property
    def offsets(self):
        """Link offsets of S, in the order of link_sum_<l>: unit vectors, then extras."""
        d = self.ndim
        return [tuple(int(i == mu) for i in range(d)) for mu in range(d)] + list(self.extra_offsets)

    def stored_link_sum(self, offset):
        """The stored link sum per record for `offset` (or its negative), or None."""
        neg = tuple(-c for c in offset)
        for i, o in enumerate(self.offsets):
            if o in (tuple(offset), neg):
                col = self.observables.get(f"link_sum_{i}")
                return None if col is None else np.asarray(col, dtype=float)
        return None

    def local_couplings(self, lattice) -> dict:
        """This rank's block of S's couplings: {family: scalar or array (w: (..., d), g: (..., n_extra))}."""
        from qftml.engine.action import FAMILIES

        if self.couplings_path is not None:
            from qftml.io.couplings import read_couplings
            return read_couplings(self.couplings_path, lattice)[0]
        out = {}
        for fam in FAMILIES:
            v = (self.couplings or {}).get(fam, 0.0)
            out[fam] = float(v) if np.ndim(v) == 0 else np.asarray(v, dtype=float)[lattice.local_slices]
        return out

    def skip(self, n: int) -> "Ensemble":
        """The same ensemble without its first n records (thermalisation cut); shares the open file."""
        n = int(n)
        configs = None if self.configs is None else self.configs[n:]
        return Ensemble(self.shape, {k: v[n:] for k, v in self.observables.items()}, self.couplings,
                        attrs=self.attrs, extra_offsets=self.extra_offsets, field=self.field, configs=configs,
                        name=self.name, path=self.path, couplings_path=self.couplings_path, _file=self._file)

    def close(self):
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _split_link_sums(obs):
    """Arrays; an (n, n_links) `link_sums` becomes link_sum_<l> columns, as in files."""
    out = {k: np.asarray(v) for k, v in obs.items() if k != "link_sums"}
    if "link_sums" in obs:
        ls = np.asarray(obs["link_sums"], dtype=float)
        for k in range(ls.shape[1]):
            out.setdefault(f"link_sum_{k}", ls[:, k])
    return out


def open_ensemble(path) -> Ensemble:
    """An ensemble file as an Ensemble: attributes read, observables on first use, configurations
    lazily, couplings by hyperslabs. Close it (or use `with open_ensemble(path) as ens:`)."""
    from qftml.io.couplings import _group_attrs

    path = os.fspath(path)
    f = _h5open(path, "r")
    try:
        attrs, n = check_ensemble_file(f, path)
        configs = _Rows(f["configs"], 0, n, path) if "configs" in f else None
        shape = _shape_from_attrs(attrs) or (configs.shape[1:] if configs is not None else None)
        if shape is None:
            raise EnsembleFileError(f"{path}: no lattice shape in the attributes and no /configs")
        coupling = _group_attrs(f["couplings"]) if "couplings" in f else {}
        field = coupling.get("field") or attrs.get("field") or "real"
        return Ensemble(shape, None, attrs=attrs, extra_offsets=coupling.get("extra_offsets", ()), field=field,
                        configs=configs, name=os.path.splitext(os.path.basename(path))[0], path=path,
                        couplings_path=path if "couplings" in f else None, n_records=n, _file=f)
    except EnsembleFileError:
        f.close()
        raise
    except (OSError, KeyError, RuntimeError) as e:
        f.close()
        raise EnsembleFileError(f"{path}: damaged ensemble file (truncated or corrupt?): {e}") from None


def observable_layout(lattice, action) -> dict:
    """{name: trailing shape} of every stored observable: the scalars of qftml.measure, one
    `link_sum_<l>` per link offset of the action, `slice_sums` (L0,), and `sweep`."""
    layout = {name: () for name in SCALAR_OBSERVABLES}
    for k in range(len(action.offsets)):
        layout[f"link_sum_{k}"] = ()
    layout["slice_sums"] = (lattice.shape[0],)
    layout["sweep"] = ()
    return layout


def stack_observables(records: list, layout: dict) -> dict:
    """Turn a list of measure() dicts (each with 'sweep' added) into {name: stacked array}."""
    out = {}
    for name in layout:
        if name.startswith("link_sum_"):
            k = int(name[len("link_sum_"):])
            out[name] = np.array([r["link_sums"][k] for r in records], dtype=float)
        elif name == "sweep":
            out[name] = np.array([r["sweep"] for r in records], dtype=np.int64)
        else:
            out[name] = np.array([r[name] for r in records], dtype=float)
    return out


class BlockFile:
    """An HDF5 file that every rank of `lattice` writes its own hyperslab into.

    write_path "mpio": the file is open on every rank (driver='mpio'); metadata calls are
    collective and each rank writes its block. "rank0-blocks": only rank 0 opens the file; it
    writes its block, then receives and writes the block of rank 1, 2, ... one at a time, so
    rank 0 never holds more than one rank's block. Every method is collective over the lattice.
    """

    def __init__(self, path, mode, lattice, write_path):
        self.path, self.lattice, self.comm, self.write_path = path, lattice, lattice.comm, write_path
        self.is_root = self.comm.rank == 0
        # where every rank's block sits (rank 0 needs it to place the blocks it receives)
        self.blocks = self.comm.allgather((tuple(lattice.local_offset), tuple(lattice.local_shape)))
        self.file = None
        self._datasets = {}
        if write_path == "mpio":
            self.file = _collective(self.comm, lambda: _h5open(path, mode, driver="mpio", comm=self.comm))
        elif self.is_root:
            # no HDF5 file lock, so that a running ensemble can be read (rows [:n_records])
            self.file = _collective(self.comm, lambda: _h5open(path, mode, locking=False))
        else:
            _collective(self.comm, None)

    @property
    def owns_file(self):
        return self.file is not None

    def dataset(self, name):
        """h5py Dataset by name, cached (looking names up costs more than writing a small batch)."""
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = self.file[name]
        return ds

    def create(self, name, shape, chunks=None, maxshape=None, dtype="f8", compression=None):
        if self.owns_file:
            if chunks is not None and 0 in chunks:   # e.g. g without extra links: (..., 0)
                chunks, maxshape, compression = None, None, None
            if 0 in shape and maxshape is None:
                compression = None
            self.file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, maxshape=maxshape,
                                     compression=compression if self.write_path != "mpio" else None)

    def write_blocks(self, name, lead, local):
        """dataset[lead..., block slices, trailing...] = local on every rank, where `lead` is a tuple
        of slices for leading axes and local has shape lead_shape + local_shape + trailing."""
        local = np.ascontiguousarray(local, dtype=float)
        nlead = len(lead)
        if self.write_path == "mpio":
            ds = self.dataset(name)
            with ds.collective:
                ds[tuple(lead) + self.lattice.local_slices] = local
            return
        if not self.is_root:
            self.comm.Send(local, dest=0, tag=TAGS["ensemble_gather"])
            return
        ds = self.dataset(name)
        lead_shape, trailing = local.shape[:nlead], local.shape[nlead + self.lattice.ndim:]
        for r, (offset, shape) in enumerate(self.blocks):
            if r == 0:
                block = local
            else:
                block = np.empty(lead_shape + shape + trailing)
                self.comm.Recv(block, source=r, tag=TAGS["ensemble_gather"])
            ds[tuple(lead) + tuple(slice(o, o + n) for o, n in zip(offset, shape))] = block

    def set_attrs(self, group="/", **attrs):
        if self.owns_file:
            g = self.file[group]
            for k, v in attrs.items():
                g.attrs[k] = _encode(v)

    def flush(self):
        if self.owns_file:
            self.file.flush()

    def close(self):
        self._datasets.clear()
        if self.owns_file:
            self.file.close()
            self.file = None


def _collective(comm, action, error_type=None):
    """Run `action` on the ranks that pass one (None: nothing to do here); if it fails anywhere,
    raise the same EnsembleFileError (or error_type) on every rank."""
    result, error = None, None
    if action is not None:
        try:
            result = action()
        except EnsembleFileError as e:
            error = str(e)
    errors = comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first:
        if result is not None and hasattr(result, "close"):
            with contextlib.suppress(Exception):
                result.close()
        raise (error_type or EnsembleFileError)(first)
    return result


def _config_chunks(lattice, batch):
    """One chunk = up to `batch` records of one rank's block (rank writes never share a chunk)."""
    per_record = int(np.prod(lattice.local_shape))
    n = max(1, min(batch, (1 << 17) // max(per_record, 1)))
    return (n,) + tuple(lattice.local_shape)


class EnsembleWriter:
    """Appends batches of records to an ensemble file (collective over the lattice's ranks)."""

    def __init__(self, bf: BlockFile, layout: dict, store_configs: bool, n_records: int):
        self.bf, self.layout, self.store_configs, self.n_records = bf, layout, store_configs, n_records

    @property
    def write_path(self):
        return self.bf.write_path

    @classmethod
    def create(cls, path, lattice, attrs: dict, layout: dict, couplings: dict, store_configs=True,
               batch=16, write_path=None, couplings_attrs=None):
        """A new file (replacing any old one): schema, attributes and /couplings from each rank's block."""
        write_path = write_path or choose_write_path(lattice.comm)
        bf = BlockFile(path, "w", lattice, write_path)
        shape = tuple(lattice.shape)
        if store_configs:
            bf.create("configs", (0,) + shape, chunks=_config_chunks(lattice, batch), maxshape=(None,) + shape)
        for name, trailing in layout.items():
            dtype = "i8" if name == "sweep" else "f8"
            rows = max(1, min(1024, (1 << 14) // max(int(np.prod(trailing)), 1)))  # chunks <= 128 kB
            bf.create(f"observables/{name}", (0,) + trailing, chunks=(rows,) + trailing,
                      maxshape=(None,) + trailing, dtype=dtype)
        for fam, local in couplings.items():
            local = np.asarray(local, dtype=float)
            trailing = local.shape[lattice.ndim:]
            bf.create(f"couplings/{fam}", shape + trailing, chunks=tuple(lattice.local_shape) + trailing,
                      compression="gzip")
            bf.write_blocks(f"couplings/{fam}", (), local)
        if couplings:
            bf.set_attrs(group="couplings", **(couplings_attrs or {}))
        bf.set_attrs(format=FORMAT, format_version=FORMAT_VERSION, n_records=0, complete=False,
                     write_path=write_path, store_configs=bool(store_configs), **attrs)
        bf.flush()
        return cls(bf, layout, store_configs, 0)

    @classmethod
    def reopen(cls, path, lattice, n_records: int, layout: dict, store_configs: bool, write_path=None):
        """Open an existing file for appending after record n_records (rows beyond it are dropped:
        they came from a chain segment that resumes from an earlier checkpoint)."""
        write_path = write_path or choose_write_path(lattice.comm)
        bf = BlockFile(path, "r+", lattice, write_path)
        error = None
        if bf.owns_file:
            try:
                f = bf.file
                _, have = check_ensemble_file(f, path, append=True)
                if have < n_records:
                    raise EnsembleFileError(f"{path}: holds {have} records but the checkpoint counts "
                                            f"{n_records}; the file does not belong to this checkpoint")
                names = set(f["observables"].keys())
                if names != set(layout):
                    raise EnsembleFileError(f"{path}: observables {sorted(names)} differ from this run's "
                                            f"{sorted(layout)}")
                if store_configs != ("configs" in f):
                    raise EnsembleFileError(f"{path}: output.configs differs from the run that made the file")
            except (KeyError, OSError, RuntimeError) as e:
                error = f"{path}: damaged ensemble file (truncated or corrupt?): {e}"
            except EnsembleFileError as e:
                error = str(e)
        error = next((e for e in bf.comm.allgather(error) if e), None)
        if error:
            bf.close()
            raise EnsembleFileError(error)
        w = cls(bf, layout, store_configs, n_records)
        w._resize(n_records)
        bf.set_attrs(n_records=n_records, complete=False)
        bf.flush()
        return w

    def _resize(self, n):
        if not self.bf.owns_file:
            return
        if self.store_configs:
            self.bf.dataset("configs").resize(n, axis=0)
        for name in self.layout:
            self.bf.dataset(f"observables/{name}").resize(n, axis=0)

    def append(self, local_configs, observables: dict):
        """Write one batch: k configurations (this rank's blocks, shape (k, *local_shape), or None
        if configs are not stored) and {name: (k, ...)} observables (identical on every rank)."""
        k = len(observables["sweep"])
        if k == 0:
            return
        n0, n1 = self.n_records, self.n_records + k
        self._resize(n1)
        if self.store_configs:
            self.bf.write_blocks("configs", (slice(n0, n1),), local_configs)
        if self.bf.owns_file:
            for name, values in observables.items():
                ds = self.bf.dataset(f"observables/{name}")
                if self.write_path == "mpio":
                    with ds.collective:
                        ds[n0:n1] = values
                else:
                    ds[n0:n1] = values
        self.bf.flush()                      # the data are on disk ...
        self.bf.set_attrs(n_records=n1)      # ... before they are counted
        self.bf.flush()
        self.n_records = n1

    def set_attrs(self, **attrs):
        self.bf.set_attrs(**attrs)
        self.bf.flush()

    def close(self):
        self.bf.close()


def fsync_path(path):
    """fsync a file (or directory) by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
