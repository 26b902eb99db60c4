"""Reweighting targets: A given as S plus changes, and A - S per configuration (DESIGN 1.4).

A target is the ensemble's action S changed by homogeneous terms with real or complex coefficients,

    A = S - dw sum_{x,mu} phi_x phi_{x+mu} - g sum_{x,e} phi_x phi_{x+e} + da sum phi^2 + db sum phi^4
          + dr sum phi                                                    (base = "ensemble")

or a new action plus the same changes (base = "action"): the homogeneous theory kappa, mu2, lam, h
(w = kappa, a = (mu2 + 2 d kappa)/2, b = lam/4, r = -h) with extra links of coupling g, or an
inhomogeneous action read from a couplings file. Every coefficient may be complex: the key
`<name>_imag` adds i * value (e.g. da_imag = 0.15 is + i 0.15 sum phi^2).

A - S is computed per configuration from sufficient statistics where that is possible:
  * homogeneous changes need sum phi^2, sum phi^4, M and link sums per offset; these come from the
    stored /observables when the ensemble has them;
  * link types the ensemble did not store (e.g. nnn links on an ensemble of an action without them),
    an inhomogeneous target or an inhomogeneous S without stored /observables/action are computed
    from the configurations: every rank reads its own hyperslab of each configuration (never the
    whole ensemble, never the whole lattice on one rank), sets field.local = block, refreshes the
    halos and sums the engine's local gradient densities; one Allreduce over all configurations.

Ensembles are qftml.io.ensembles.Ensemble (files via open_ensemble, or in memory with couplings).

Exports:
    open_ensembles(paths, therm=0) -> [Ensemble]   ensemble files of S, first `therm` records dropped
    check_compatible(ensembles)             same lattice, field and action, none empty (else error)
    TargetSpec                              one target point (dataclass of the keys above)
    TARGET_KEYS                             the scannable numeric keys
    scan_targets(spec, key, values)         [TargetSpec] along one key
    ReweightInputs                          deltas (n_points, n_cfg), primaries, replica lengths, ...
    compute_inputs(ensembles, targets, comm=None, progress=False, quiet=False)   the collective work
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from qftml.engine.action import FAMILIES, NNN_2D, Action, homogeneous_couplings
from qftml.engine.lattice import Field, Lattice
from qftml.io.ensembles import EnsembleFileError, open_ensemble
from qftml.reweighting.estimator import ReweightError, primary_observables


def _homogeneous_value(loc, lattice):
    """(True, scalar) if a local block (or scalar) is constant over the whole lattice (collective)."""
    if np.ndim(loc) == 0:
        return True, float(loc)
    lo, hi = (float(loc.min()), float(loc.max())) if loc.size else (np.inf, -np.inf)
    lo = lattice.comm.allreduce(lo, op=MPI.MIN)
    hi = lattice.comm.allreduce(hi, op=MPI.MAX)
    return lo == hi, lo


def open_ensembles(paths, therm=0) -> list:
    """The ensemble files of S as Ensembles (open until closed), the first `therm` records dropped.
    File problems become ReweightError."""
    out = []
    try:
        for p in paths:
            e = open_ensemble(p)
            out.append(e)
            if therm and therm >= e.n_records:
                raise ReweightError(f"{p}: reweight.therm = {therm} drops all {e.n_records} records")
            if therm:
                out[-1] = e.skip(therm)
    except (EnsembleFileError, ReweightError) as err:
        for e in out:
            e.close()
        raise ReweightError(str(err)) from None
    return out


def check_compatible(ensembles, comm=None):
    """Raise ReweightError unless all ensembles are non-empty, on the same lattice, field and action."""
    if not ensembles:
        raise ReweightError("no ensembles given")
    first = ensembles[0]
    for e in ensembles:
        if not e.has_couplings:
            raise ReweightError(f"{e.label}: no /couplings: the ensemble's action is unknown, cannot form A - S")
        if e.n_records == 0:
            raise ReweightError(f"ensemble {e.label} is empty: no configurations")
        if e.shape != first.shape:
            raise ReweightError(f"ensembles have different lattice shapes: {first.label} {first.shape}, "
                                f"{e.label} {e.shape}")
        if e.field != first.field:
            raise ReweightError(f"ensembles have different field types: {first.field} vs {e.field}")
        if e.extra_offsets != first.extra_offsets:
            raise ReweightError(f"ensembles have different link types: {first.extra_offsets} vs {e.extra_offsets}")
    if len(ensembles) > 1:
        lat = Lattice(first.shape, comm=comm)
        ref = first.local_couplings(lat)
        for e in ensembles[1:]:
            other = e.local_couplings(lat)
            for fam in FAMILIES:
                x, y = np.asarray(ref.get(fam, 0.0)), np.asarray(other.get(fam, 0.0))
                try:
                    diff = float(np.max(np.abs(x - y))) if x.size and y.size else 0.0
                except ValueError:
                    diff = np.inf  # shapes do not broadcast
                if lat.comm.allreduce(diff, op=MPI.MAX) > 1e-12:
                    raise ReweightError(f"ensembles {first.label} and {e.label} are of different actions "
                                        f"(coupling {fam} differs): reweighting combines replicas of one S only")


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------

TARGET_KEYS = ("kappa", "mu2", "lam", "h", "g", "dw", "da", "db", "dr",
               "g_imag", "dw_imag", "da_imag", "db_imag", "dr_imag")


@dataclass
class TargetSpec:
    base: str = "ensemble"      # "ensemble": A = S + changes; "action": A = given action + changes
    kappa: float = 1.0
    mu2: float = -0.9515
    lam: float = 0.7
    h: float = 0.0
    couplings: str = ""         # base = "action": inhomogeneous A from /couplings of this file
    extra: str = ""             # "" or "nnn": link offsets of the g term
    extra_offsets: list = field(default_factory=list)   # explicit offsets instead of `extra`
    g: float = 0.0
    dw: float = 0.0
    da: float = 0.0
    db: float = 0.0
    dr: float = 0.0
    g_imag: float = 0.0
    dw_imag: float = 0.0
    da_imag: float = 0.0
    db_imag: float = 0.0
    dr_imag: float = 0.0

    def offsets(self, ndim):
        if self.extra_offsets:
            return [tuple(int(c) for c in e) for e in self.extra_offsets]
        if self.extra == "nnn":
            if ndim != 2:
                raise ReweightError(f"target extra = 'nnn' is defined for 2D lattices only (this one is {ndim}D); "
                                    "give extra_offsets")
            return [tuple(e) for e in NNN_2D]
        if self.extra:
            raise ReweightError(f"target extra = {self.extra!r}: only 'nnn' is named")
        return []

    def is_complex(self):
        return any(getattr(self, k) != 0 for k in TARGET_KEYS if k.endswith("_imag"))


def scan_targets(spec: TargetSpec, key: str, values) -> list:
    """One TargetSpec per value of `key` (one of TARGET_KEYS)."""
    if key not in TARGET_KEYS:
        raise ReweightError(f"cannot scan {key!r}: scannable keys are {', '.join(TARGET_KEYS)}")
    return [dataclasses.replace(spec, **{key: float(v)}) for v in values]


def _linear_terms(spec: TargetSpec, ens, s_homog: dict):
    """(coefficients {statistic: complex}, needs S(phi)?, inhomogeneous-A file or None) with
    A - S = sum_k c_k T_k  [- S(phi) + A_file(phi) when not expressible].

    Statistics: "sum_phi2", "sum_phi4", "M", ("link", offset).
    """
    d = ens.ndim
    units = ens.offsets[:d]
    c = {}

    def add(key, value):
        if value != 0:
            c[key] = c.get(key, 0) + value

    dw = spec.dw + 1j * spec.dw_imag
    g = spec.g + 1j * spec.g_imag
    da = spec.da + 1j * spec.da_imag
    db = spec.db + 1j * spec.db_imag
    dr = spec.dr + 1j * spec.dr_imag
    extra = spec.offsets(d)
    if ens.field == "ising" and (da != 0 or db != 0):
        raise ReweightError("the ensemble is of an 'ising' field (phi^2 = phi^4 = 1): a and b are not couplings "
                            "it can be reweighted in (da, db must be 0)")
    if g != 0 and not extra:
        raise ReweightError("target g is set but no extra links are given (extra = 'nnn' or extra_offsets)")
    for u in units:
        add(("link", u), -dw)
    for e in extra:
        add(("link", e), -g)
    add("sum_phi2", da)
    add("sum_phi4", db)
    add("M", dr)
    needs_s = False
    a_file = None
    if spec.base == "action":
        if spec.couplings:
            a_file = spec.couplings
            needs_s = True
        else:
            hc = homogeneous_couplings(d, spec.kappa, spec.mu2, spec.lam, spec.h)
            if ens.field == "ising":
                hc["a"] = hc["b"] = 0.0  # phi^2 = phi^4 = 1: constants, which cancel in every ratio
            if s_homog is not None:
                # A - S from coefficient differences: no need for S(phi) per configuration
                for u, i in zip(units, range(d)):
                    add(("link", u), -(hc["w"] - s_homog["w"][i]))
                for e, gs in zip(ens.extra_offsets, s_homog["g"]):
                    add(("link", e), gs)   # -(-g_S sum_e phi phi): S's extra links are not part of A
                add("sum_phi2", hc["a"] - (0 if ens.field == "ising" else s_homog["a"]))
                add("sum_phi4", hc["b"] - (0 if ens.field == "ising" else s_homog["b"]))
                add("M", hc["r"] - s_homog["r"])
            else:
                needs_s = True
                for u in units:
                    add(("link", u), -hc["w"])
                add("sum_phi2", hc["a"])
                add("sum_phi4", hc["b"])
                add("M", hc["r"])
    elif spec.base != "ensemble":
        raise ReweightError(f"target base = {spec.base!r}: must be 'ensemble' or 'action'")
    return c, needs_s, a_file


def _s_homogeneous(s_local: dict, ens, lattice: Lattice):
    """S's couplings as scalars {w: [d], g: [n_extra], a, b, r} if S is homogeneous, else None."""
    out = {"w": [], "g": []}
    for fam in ("a", "b", "r"):
        ok, v = _homogeneous_value(s_local.get(fam, 0.0), lattice)
        if not ok:
            return None
        out[fam] = v
    for fam, n in (("w", ens.ndim), ("g", len(ens.extra_offsets))):
        val = s_local.get(fam, 0.0)
        for i in range(n):
            ok, v = _homogeneous_value(val if np.ndim(val) == 0 else val[..., i], lattice)
            if not ok:
                return None
            out[fam].append(v)
    return out


def _check_target_normalisable(spec, ens, s_homog, s_local, lattice):
    """A must define a normalisable weight (its real part): Re b > 0, or a positive Gaussian form."""
    if ens.field == "ising":
        return
    d = ens.ndim
    if spec.base == "action" and not spec.couplings:
        b_min = spec.lam / 4 + spec.db
    else:
        if spec.base == "action":
            return  # checked by qftml.Action when the file's action is built
        bl = np.asarray(s_local.get("b", 0.0))
        b_min = lattice.comm.allreduce(float(bl.min()) if bl.size else np.inf, op=MPI.MIN) + spec.db
    if b_min > 0:
        return
    if b_min < 0:
        raise ReweightError(f"target has Re b = {b_min:g} < 0: exp(-A) is not normalisable")
    # Gaussian target: its real quadratic form must be positive definite (homogeneous case)
    if s_homog is None and spec.base == "ensemble":
        raise ReweightError("Gaussian target from an inhomogeneous Gaussian S: positivity cannot be verified")
    from qftml.exact import momenta
    k = momenta(lattice.shape)
    if spec.base == "action":
        hc = homogeneous_couplings(d, spec.kappa, spec.mu2, spec.lam, spec.h)
        K = 2 * hc["a"] * np.ones(lattice.shape)
        w = [hc["w"]] * d
    else:
        K = 2 * s_homog["a"] * np.ones(lattice.shape)
        w = s_homog["w"]
        for e, gs in zip(ens.extra_offsets, s_homog["g"]):
            K = K - 2 * gs * np.cos(sum(ei * km for ei, km in zip(e, k)))
    K = K + 2 * spec.da
    for mu in range(d):
        K = K - 2 * (w[mu] + spec.dw) * np.cos(k[mu])
    for e in spec.offsets(d):
        K = K - 2 * spec.g * np.cos(sum(ei * km for ei, km in zip(e, k)))
    if np.min(K) <= 0:
        raise ReweightError("the Gaussian target's quadratic form is not positive definite: exp(-A) is not "
                            "normalisable")


@dataclass
class ReweightInputs:
    deltas: np.ndarray          # (n_points, n_cfg) A - S, complex if any target is
    primaries: dict             # per-configuration observables of S
    replica_lengths: list
    shape: tuple
    volume: int
    sources: dict               # statistic -> "stored" | "configs"
    targets: list
    ensemble_name: str
    statistics: dict = field(default_factory=dict)   # the statistics used, (n_cfg,) each


def _stat_label(key):
    """Readable name of a statistic key."""
    if isinstance(key, tuple):
        if key[0] == "link":
            return "links(" + ",".join(map(str, key[1])) + ")"
        if key[0] == "action_A":
            return f"A(phi) of {key[1]}"
        return f"{key[0]}:{key[1]}"
    return {"action_S": "S(phi)"}.get(key, key)


def _stored_column(ensembles, key):
    """A statistic over all ensembles from their stored observables, or None if one lacks it."""
    parts = []
    for e in ensembles:
        v = e.stored_link_sum(key[1]) if isinstance(key, tuple) else e.observables.get(key)
        if v is None:
            return None
        parts.append(v)
    return np.asarray(parts[0] if len(parts) == 1 else np.concatenate(parts), dtype=float)


def _stored_statistics(ensembles, needed, needs_s, a_files):
    """({statistic: stored column}, {statistics that must come from the configurations})."""
    stored, from_configs = {}, set()
    for key in needed:
        col = _stored_column(ensembles, key)
        if col is None:
            from_configs.add(key)
        else:
            stored[key] = col
    if needs_s:
        if all("action" in e.observables for e in ensembles):
            stored["action_S"] = np.concatenate([np.asarray(e.observables["action"], float) for e in ensembles])
        else:
            from_configs.add("action_S")
    from_configs.update(("action_A", fname) for fname in a_files)
    return stored, from_configs


def _deltas(plans, stored, n, any_complex):
    """(n_points, n) A - S = sum_k c_k T_k [- S(phi)] [+ A_file(phi)] per plan."""
    deltas = np.zeros((len(plans), n), dtype=complex if any_complex else float)
    for p, (c, ns, a_file) in enumerate(plans):
        row = np.zeros(n, dtype=complex)
        for key, coef in c.items():
            row += coef * stored[key]
        if ns:
            row -= stored["action_S"]
        if a_file:
            row += stored[("action_A", a_file)]
        deltas[p] = row if any_complex else row.real
    return deltas


def _primaries(ensembles, stored, needed):
    """The estimator's primaries: stored observables (or recomputed ones) and extra link sums."""
    ens0 = ensembles[0]
    obs = {}
    for k in ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "link_sums", "slice_sums"):
        parts = [e.link_sums if k == "link_sums" else e.observables.get(k) for e in ensembles]
        if all(x is not None for x in parts):
            obs[k] = np.concatenate([np.asarray(x, float) for x in parts])
        elif ("obs", k) in stored:
            obs[k] = stored[("obs", k)]
    prim = primary_observables(obs, ens0.volume, ens0.shape)
    for key in needed:
        if isinstance(key, tuple) and ens0.stored_link_sum(key[1]) is None:
            prim["sum_links_" + ",".join(map(str, key[1]))] = stored[key]
    return prim


def compute_inputs(ensembles, targets, comm=None, progress=False, quiet=False) -> ReweightInputs:
    """A - S for every target and configuration, plus the primaries. Collective over `comm`."""
    comm = MPI.COMM_WORLD if comm is None else comm
    check_compatible(ensembles, comm)
    if not targets:
        raise ReweightError("no target points")
    ens0 = ensembles[0]
    lattice = Lattice(ens0.shape, comm=comm)
    s_local = ens0.local_couplings(lattice)
    s_homog = _s_homogeneous(s_local, ens0, lattice)
    plans = [_linear_terms(t, ens0, s_homog) for t in targets]
    for t in targets:
        _check_target_normalisable(t, ens0, s_homog, s_local, lattice)
    needed = set()
    for c, _, _ in plans:
        needed.update(c.keys())
    needs_s = any(p[1] for p in plans)
    a_files = sorted({p[2] for p in plans if p[2]})

    # which statistics are stored, which must come from the configurations
    stored, from_configs = _stored_statistics(ensembles, needed, needs_s, a_files)
    prim_needed = [k for k in ("slice_sums", "sum_phi2", "sum_phi4", "M", "m", "abs_m", "m2", "m4")
                   if not all(k in e.observables for e in ensembles)]
    if from_configs or prim_needed:
        missing = [e.label for e in ensembles if e.configs is None]
        if missing and from_configs:
            what = ", ".join(sorted(_stat_label(k) for k in from_configs))
            raise ReweightError(f"the target needs {what}, which ensemble(s) {', '.join(missing)} neither store "
                                "nor can compute (no /configs): the ensemble cannot support this target")
        if not missing:
            stored.update(_statistics_from_configs(ensembles, lattice, from_configs, s_local,
                                                   needed_obs=prim_needed, progress=progress, quiet=quiet))

    n = sum(e.n_records for e in ensembles)
    deltas = _deltas(plans, stored, n, any(t.is_complex() for t in targets))
    sources = {_stat_label(k): ("configs" if k in from_configs else "stored")
               for k in list(needed) + (["action_S"] if needs_s else []) + [("action_A", f) for f in a_files]}
    name = os.path.commonprefix([e.name for e in ensembles]) or "ensemble"
    return ReweightInputs(deltas=deltas, primaries=_primaries(ensembles, stored, needed),
                          replica_lengths=[e.n_records for e in ensembles],
                          shape=ens0.shape, volume=ens0.volume, sources=sources, targets=list(targets),
                          ensemble_name=name.replace("|", "_"),
                          statistics={_stat_label(k): v for k, v in stored.items()})


def _column(key, units, probe_extra):
    """fn(densities, phi) -> this rank's sum of the statistic `key` (one uniform signature for all)."""
    if isinstance(key, tuple) and key[0] == "link":
        off, neg = key[1], tuple(-c for c in key[1])
        if off in units or neg in units:
            mu = units.index(off if off in units else neg)
            return lambda dens, phi: -dens["w"][..., mu].sum()
        j = next(q for q, o in enumerate(probe_extra) if o == off or o == neg)
        return lambda dens, phi: -dens["g"][..., j].sum()
    if key == "sum_phi2":
        return lambda dens, phi: (phi * phi).sum()
    if key == "sum_phi4":
        return lambda dens, phi: (phi ** 4).sum()
    if key == "M":
        return lambda dens, phi: phi.sum()
    raise KeyError(key)


def _actions_to_evaluate(keys, lattice, ens0, s_local):
    """{"action_S" or ("action_A", file): (Action, this rank's couplings)} for the keys asking for one."""
    from qftml.io.couplings import read_couplings

    out = {}
    if "action_S" in keys:
        s_action = Action(lattice, *[s_local.get(f, 0.0) for f in ("w", "a", "b", "r")], g=s_local.get("g", 0.0),
                          extra_offsets=[list(e) for e in ens0.extra_offsets], field=ens0.field)
        out["action_S"] = (s_action, s_local)
    for k in keys:
        if isinstance(k, tuple) and k[0] == "action_A":
            act = _action_from_file(k[1], lattice, ens0.field)
            local, _ = read_couplings(k[1], lattice)
            out[k] = (act, local)
    return out


def _observables_from_m(out, want_obs, volume):
    """m, |m|, m^2, m^4 per configuration from the recomputed M (those asked for)."""
    if want_obs & {"m", "abs_m", "m2", "m4"}:
        m = out[("obs", "M")] / volume
        for name, v in (("m", m), ("abs_m", np.abs(m)), ("m2", m * m), ("m4", m ** 4)):
            if name in want_obs:
                out[("obs", name)] = v


def _statistics_from_configs(ensembles, lattice, keys, s_local, needed_obs=(), progress=False, quiet=False):
    """Per-configuration statistics from each rank's hyperslab of every configuration (collective).

    keys: ("link", offset), "sum_phi2", "sum_phi4", "M", "action_S", ("action_A", file).
    needed_obs: stored-observable names to recompute too (returned as ("obs", name)).
    Each rank reads its block of configuration i, sets field.local, refreshes the halos (neighbour
    messages only) and takes the engine's local gradient densities (-phi_x phi_{x+e}, phi^2, ...);
    their local sums are collected for all configurations and reduced with ONE Allreduce at the
    end, so no collective call per configuration. S(phi) = sum_theta theta . dS/dtheta (S is linear
    in its couplings), likewise A(phi).
    """
    from qftml.progress import Progress

    comm = lattice.comm
    ens0 = ensembles[0]
    d = ens0.ndim
    units = ens0.offsets[:d]
    extra = sorted({k[1] for k in keys if isinstance(k, tuple) and k[0] == "link" and k[1] not in units})
    # a probe action carrying the needed link offsets; only its densities are used
    probe = Action(lattice, 0.0, 1.0, 1.0, 0.0, g=0.0, extra_offsets=[list(e) for e in extra], field=ens0.field)
    probe_extra = [tuple(o) for o in probe.offsets[d:]]
    couplings_of = _actions_to_evaluate(keys, lattice, ens0, s_local)
    scalar_keys = [k for k in keys if k not in couplings_of]
    want_obs = set(needed_obs)
    scalar_obs = [k for k in ("M", "sum_phi2", "sum_phi4") if want_obs & {k, "m", "abs_m", "m2", "m4"}
                  and (k == "M" or k in want_obs)]
    cols = [_column(k, units, probe_extra) for k in scalar_keys + scalar_obs]
    action_keys = list(couplings_of)
    n = sum(e.n_records for e in ensembles)
    local = np.zeros((n, len(cols) + len(action_keys)))
    slices = np.zeros((n, ens0.shape[0])) if "slice_sums" in want_obs else None
    t0, nt = lattice.local_offset[0], lattice.local_shape[0]
    fld = Field(lattice)
    bar = Progress(n, "A - S from configs", unit="cfg", comm=comm, quiet=quiet) if progress else None
    sl = lattice.local_slices
    for j, (e, i) in enumerate((e, i) for e in ensembles for i in range(e.n_records)):
        phi = np.asarray(e.configs[(i,) + sl], dtype=float)
        fld.local = phi  # setting the field refreshes its ghosts (one exchange per configuration)
        dens = probe.gradient_densities(fld)
        for c, fn in enumerate(cols):
            local[j, c] = fn(dens, phi)
        for c, k in enumerate(action_keys):
            act, theta = couplings_of[k]
            da = act.gradient_densities(fld)
            local[j, len(cols) + c] = sum(float(np.sum(np.asarray(theta.get(f, 0.0)) * da[f]))
                                          for f in FAMILIES if f in da and da[f].size)
        if slices is not None:
            slices[j, t0:t0 + nt] = phi.reshape(nt, -1).sum(axis=1)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
    if slices is not None:
        comm.Allreduce(MPI.IN_PLACE, slices, op=MPI.SUM)
    names = scalar_keys + [("obs", k) for k in scalar_obs] + action_keys
    out = {k: local[:, c].copy() for c, k in enumerate(names)}
    _observables_from_m(out, want_obs, ens0.volume)
    if slices is not None:
        out[("obs", "slice_sums")] = slices
    return out


def _action_from_file(path, lattice, field_type):
    """The inhomogeneous action of /couplings in `path`; only this rank's blocks are read."""
    from qftml.io.couplings import action_from_couplings

    if not os.path.exists(path):
        raise ReweightError(f"target couplings file {path} not found")
    return action_from_couplings(path, lattice, field=field_type)
