"""Reweighting (DESIGN 1.4, issue 5): Gaussian oracles, S -> S identity, phi^4 vs direct simulation,
flags for unreliable points, bad input, and the `qftml reweight` command end to end.

Ensembles are generated here with the engine (independence sampler on 8x8 lattices); tolerances are 4 sigma
of the Gamma-method errors (autocorrelation aware), combined in quadrature with the direct
simulation's error where two Monte Carlo results are compared. Tests marked mpi reduce over the
ranks (A - S from each rank's hyperslab of the configurations) and run on 1, 2 and 4 ranks.
"""
import json
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml import exact
from qftml.io.ensembles import Ensemble, EnsembleFileError, open_ensemble
from qftml.reweighting.targets import TargetSpec, compute_inputs, scan_targets
from qftml.reweighting.estimator import ReweightError, reweight, reweight_scan

SHAPE = (8, 8)
V = 64
NNN = [(1, 1), (1, -1)]
W0, A0 = 0.25, 1.0          # Gaussian S: K(0) = 2 a - 4 w = 1
NSIG = 4.0


def sample_chain(shape, couplings, n, seed, extra_offsets=(), field="real", algorithm="independence", every=1,
                 keep_configs=True, comm=None):
    """n configurations of the action `couplings` (scalars) and their observables.

    Each rank keeps its own blocks; one allgather at the end assembles the (small) global
    configurations on every rank and the observables are measured on them with numpy, so the chain
    costs no collective call per configuration (the MPI runs are oversubscribed)."""
    comm = comm or MPI.COMM_WORLD
    lat = qftml.Lattice(shape, comm=comm)
    act = qftml.Action(lat, couplings.get("w", 0.0), couplings.get("a", 0.0), couplings.get("b", 0.0),
                       couplings.get("r", 0.0), g=couplings.get("g", 0.0), extra_offsets=extra_offsets, field=field)
    s = qftml.Sampler(act, seed=seed, algorithm=algorithm)
    s.thermalize(200)
    blocks = np.empty((n,) + lat.local_shape)
    for i in range(n):
        s.sweep(every)
        blocks[i] = s.field.local
    cf = np.empty((n,) + tuple(shape))
    for sl, blk in comm.allgather((lat.local_slices, blocks)):
        cf[(slice(None),) + sl] = blk
    last = qftml.measure(s.field, act)
    obs = numpy_observables(cf, couplings, act.offsets)
    np.testing.assert_allclose(obs["action"][-1], last["action"], rtol=1e-10)  # numpy == engine
    return obs, (cf if keep_configs else None)


def numpy_observables(cf, couplings, offsets):
    """The observables of qftml.measure for configurations cf (n, *shape), in numpy."""
    d = cf.ndim - 1
    axes = tuple(range(1, d + 1))
    M = cf.sum(axis=axes)
    V = np.prod(cf.shape[1:])
    m = M / V
    links = np.stack([(cf * np.roll(cf, [-o for o in off], axis=axes)).sum(axis=axes) for off in offsets], axis=1)
    p2, p4 = (cf ** 2).sum(axis=axes), (cf ** 4).sum(axis=axes)
    g = couplings.get("g", 0.0)
    act = (-couplings.get("w", 0.0) * links[:, :d].sum(1) - g * links[:, d:].sum(1) + couplings.get("a", 0.0) * p2
           + couplings.get("b", 0.0) * p4 + couplings.get("r", 0.0) * M)
    return {"M": M, "m": m, "abs_m": np.abs(m), "m2": m * m, "m4": m ** 4, "sum_phi2": p2, "sum_phi4": p4,
            "action": act, "link_sums": links, "slice_sums": cf.sum(axis=axes[1:])}


def gaussian_ensemble(n=2000, seed=11, keep_configs=True):
    obs, cfg = sample_chain(SHAPE, {"w": W0, "a": A0}, n, seed, keep_configs=keep_configs)
    return Ensemble(SHAPE, obs, {"w": W0, "a": A0, "b": 0.0, "r": 0.0}, configs=cfg, name="gauss")


def run_points(ens_list, targets):
    inp = compute_inputs(ens_list, targets)
    pts = reweight_scan(inp.deltas, inp.primaries, replica_lengths=inp.replica_lengths, volume=inp.volume,
                        shape=inp.shape, derived=("chi", "binder", "xi2"), ensemble_name="t")
    return inp, pts


def assert_within(est, exact_value, label, nsig=NSIG, extra_err=0.0):
    """|est - exact| <= nsig * error for the real and the imaginary part separately."""
    v, e = np.asarray(est.value), np.asarray(est.error)
    ex = np.asarray(exact_value)
    for part in (np.real, np.imag):
        dev = np.abs(part(v) - part(ex))
        err = np.sqrt(part(e) ** 2 + extra_err ** 2)
        nonzero = err > 0
        assert np.all(dev[nonzero] <= nsig * err[nonzero]), \
            f"{label}: deviation {dev} > {nsig} sigma ({err}) [{part.__name__}]"
        assert np.allclose(dev[~nonzero], 0, atol=1e-12), f"{label}: zero error but deviation {dev[~nonzero]}"


# ---------------------------------------------------------------------------------------------
# Gaussian oracles
# ---------------------------------------------------------------------------------------------

GAUSS_TARGETS = [
    ("mass", TargetSpec(da=0.05), dict(w=W0, a=A0 + 0.05)),
    ("hopping", TargetSpec(dw=0.02), dict(w=W0 + 0.02, a=A0)),
    ("complex mass", TargetSpec(da_imag=0.15), dict(w=W0, a=A0 + 0.15j)),
    ("mass + complex", TargetSpec(da=0.03, da_imag=0.15), dict(w=W0, a=A0 + 0.03 + 0.15j)),
    ("nnn (configs)", TargetSpec(extra="nnn", g=0.03), dict(w=W0, a=A0, extra_offsets=NNN, g=0.03)),
    ("new action", TargetSpec(base="action", kappa=W0, mu2=2 * (A0 + 0.02) - 4 * W0, lam=0.0),
     dict(w=W0, a=A0 + 0.02)),
]


@pytest.mark.mpi
def test_gaussian_oracles_phi2_correlator_phase_logz():
    ens = gaussian_ensemble()
    # the nnn target needs A - S from the configurations (hyperslab route): the first 1000 of them,
    # to keep the oversubscribed 4-rank run short; every other target uses all 2000
    half = Ensemble(SHAPE, {k: v[:1000] for k, v in ens.observables.items()}, ens.couplings,
                    configs=ens.configs[:1000], name="gauss")
    ens.configs = None
    specs = [t[1] for t in GAUSS_TARGETS]
    nnn = [i for i, t in enumerate(GAUSS_TARGETS) if t[1].extra]
    inp, pts = run_points([ens], [s for i, s in enumerate(specs) if i not in nnn])
    inp_nnn, pts_nnn = run_points([half], [specs[i] for i in nnn])
    assert inp_nnn.sources["links(1,1)"] == "configs" and inp.sources["sum_phi2"] == "stored"
    pts = list(pts)
    for i, p in zip(nnn, pts_nnn):
        pts.insert(i, p)
    ln_z_s = exact.gaussian_log_z(SHAPE, W0, A0)
    for (label, spec, ex), p in zip(GAUSS_TARGETS, pts):
        G = exact.gaussian_propagator(SHAPE, **ex)
        assert p.flags == [], (label, p.flags, p.ess)
        assert_within(p.estimates["phi2"], G[0, 0], f"{label} <phi^2>")
        # C(t) = (1/V) sum_t0 <s(t0) s(t0+t)> = sum_x1 G(t, x1)
        assert_within(p.estimates["corr"], G.sum(axis=1), f"{label} C(t)")
        # ln(Z_A/Z_S); its imaginary part only modulo 2 pi
        dlnz = exact.gaussian_log_z(SHAPE, **ex) - ln_z_s
        assert abs(p.log_z_ratio.real - dlnz.real) <= NSIG * p.log_z_ratio_error.real, (label, p.log_z_ratio, dlnz)
        if spec.is_complex():
            ex_re = dict(ex, a=ex["a"].real)
            phase = np.exp(exact.gaussian_log_z(SHAPE, **ex) - exact.gaussian_log_z(SHAPE, **ex_re))
            assert abs(p.phase.real - phase.real) <= NSIG * p.phase_error.real, (label, p.phase, phase)
            assert abs(p.phase.imag - phase.imag) <= NSIG * p.phase_error.imag, (label, p.phase, phase)
            assert p.complex_valued and np.iscomplexobj(p.estimates["phi2"].value)
        else:
            # a real target in a complex scan: phase 1, no imaginary part
            assert abs(p.phase - 1) < 1e-12 and np.all(np.imag(p.estimates["corr"].value) == 0)
        # jackknife and Gamma method agree on the size of the error (within a factor 1.6)
        e_g, e_j = np.real(p.estimates["phi2"].error), np.real(p.estimates["phi2"].error_jackknife)
        assert 1 / 1.6 < e_j / e_g < 1.6, (label, e_g, e_j)


def test_gaussian_scan_in_mass_tracks_exact_curve():
    """A whole scan along a (real part) from one ensemble; every unflagged point within 4 sigma."""
    ens = gaussian_ensemble(n=3000, seed=5, keep_configs=False)
    values = np.linspace(-0.06, 0.12, 7)
    inp, pts = run_points([ens], scan_targets(TargetSpec(), "da", values))
    for x, p in zip(values, pts):
        assert not p.flags
        G = exact.gaussian_propagator(SHAPE, W0, A0 + x)
        assert_within(p.estimates["phi2"], G[0, 0], f"da={x}")
        # susceptibility without the |m| subtraction is V <m^2> = G(k=0)-sum of G
        assert_within(p.estimates["m2"], G.sum() / V, f"da={x} m2")


# ---------------------------------------------------------------------------------------------
# S -> S, phi^4 vs direct
# ---------------------------------------------------------------------------------------------

def test_s_to_s_returns_plain_averages_exactly():
    import pyerrors as pe

    ens = gaussian_ensemble(n=1500, seed=2, keep_configs=False)
    inp, (p,) = run_points([ens], [TargetSpec()])
    assert np.all(inp.deltas == 0) and p.ess == p.n_cfg and p.phase == 1 and p.log_z_ratio == 0
    for name in ("phi2", "m2", "abs_m", "M", "corr"):
        x = inp.primaries[name]
        np.testing.assert_allclose(p.estimates[name].value, x.mean(axis=0), rtol=1e-14, atol=1e-15)
    # the error is the plain Gamma-method error of the series
    o = pe.Obs([inp.primaries["phi2"]], ["t|r0"])
    o.gamma_method(S=2.0)
    assert np.isclose(np.real(p.estimates["phi2"].error), o.dvalue, rtol=1e-10)
    # derived: chi = V (<m^2> - <|m|>^2) of the plain averages
    chi = V * (inp.primaries["m2"].mean() - inp.primaries["abs_m"].mean() ** 2)
    assert np.isclose(p.estimates["chi"].value, chi, rtol=1e-12)


def test_phi4_reweighted_agrees_with_direct_simulation():
    cS = {"w": 0.3, "a": 1.0, "b": 0.25}
    cA = dict(cS, a=1.08, w=0.31)
    obs_s, _ = sample_chain(SHAPE, cS, 6000, seed=21, keep_configs=False)
    obs_a, _ = sample_chain(SHAPE, cA, 6000, seed=22, keep_configs=False)
    ens_s = Ensemble(SHAPE, obs_s, cS)
    ens_a = Ensemble(SHAPE, obs_a, cA)
    _, (p,) = run_points([ens_s], [TargetSpec(da=0.08, dw=0.01)])
    _, (d,) = run_points([ens_a], [TargetSpec()])
    assert not p.flags
    for name in ("phi2", "phi4", "m2", "abs_m", "chi", "binder", "corr"):
        assert_within(p.estimates[name], d.estimates[name].value, f"phi^4 {name}",
                      extra_err=np.real(d.estimates[name].error))
    # and the shift is resolved: the direct values at S and A differ by many sigma
    _, (s0,) = run_points([ens_s], [TargetSpec()])
    diff = abs(d.estimates["phi2"].value - s0.estimates["phi2"].value)
    assert diff > 8 * np.hypot(np.real(d.estimates["phi2"].error), np.real(s0.estimates["phi2"].error))


# ---------------------------------------------------------------------------------------------
# flags for unreliable points
# ---------------------------------------------------------------------------------------------

def test_flags_low_ess_and_phase_collapse():
    ens = gaussian_ensemble(n=1000, seed=7, keep_configs=False)
    _, pts = run_points([ens], [TargetSpec(da=0.02), TargetSpec(da=2.5), TargetSpec(da_imag=0.1),
                                TargetSpec(da_imag=3.0)])
    near, far, cnear, cfar = pts
    assert near.flags == [] and cnear.flags == []
    assert "low_ess" in far.flags and far.ess < 100 and not far.reliable
    assert "phase" in cfar.flags and cfar.abs_phase < 3 * cfar.abs_phase_error
    # an all-real target never gets a phase flag; flags reach the JSON form
    assert "phase" not in far.flags
    assert far.to_dict()["flags"] == far.flags and far.to_dict()["reliable"] is False


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_bad_input_clear_errors():
    obs, _ = sample_chain(SHAPE, {"w": W0, "a": A0}, 50, seed=1, keep_configs=False)
    good = Ensemble(SHAPE, obs, {"w": W0, "a": A0})
    obs4, _ = sample_chain((8, 4), {"w": W0, "a": A0}, 50, seed=1, keep_configs=False)
    other = Ensemble((8, 4), obs4, {"w": W0, "a": A0})
    with pytest.raises(ReweightError, match="different lattice shapes"):
        compute_inputs([good, other], [TargetSpec(da=0.1)])
    empty = Ensemble(SHAPE, {k: v[:0] for k, v in obs.items()}, {"w": W0, "a": A0})
    with pytest.raises(ReweightError, match="empty"):
        compute_inputs([empty], [TargetSpec(da=0.1)])
    with pytest.raises(ReweightError, match="empty"):
        reweight(np.zeros(0), {})
    # nnn links: not stored, no configurations -> the ensemble cannot support the target
    with pytest.raises(ReweightError, match=r"links\(1,1\).*cannot support"):
        compute_inputs([good], [TargetSpec(extra="nnn", g=0.05)])
    with pytest.raises(ReweightError, match="no extra links"):
        compute_inputs([good], [TargetSpec(g=0.05)])
    with pytest.raises(ReweightError, match="different actions"):
        compute_inputs([good, Ensemble(SHAPE, obs, {"w": W0, "a": A0 + 0.1})], [TargetSpec()])
    with pytest.raises(ReweightError, match="not normalisable"):
        compute_inputs([good], [TargetSpec(db=-0.1)])
    with pytest.raises(ReweightError, match="not positive definite"):
        compute_inputs([good], [TargetSpec(da=-0.6)])
    with pytest.raises(ReweightError, match="cannot scan"):
        scan_targets(TargetSpec(), "nonsense", [1.0])
    obs_i, _ = sample_chain((4, 4), {"w": 0.3}, 20, seed=1, field="ising", algorithm="metropolis",
                            keep_configs=False)
    ising = Ensemble((4, 4), obs_i, {"w": 0.3}, field="ising")
    with pytest.raises(ReweightError, match="ising"):
        compute_inputs([ising], [TargetSpec(da=0.1)])
    with pytest.raises(EnsembleFileError, match="number of configurations"):
        Ensemble(SHAPE, {"M": np.zeros(3), "m": np.zeros(4)}, {"w": W0})


# ---------------------------------------------------------------------------------------------
# files and the command
# ---------------------------------------------------------------------------------------------

def write_ensemble_file(path, shape, obs, configs, couplings, extra_offsets=(), field="real"):
    """A minimal ensemble file in the DESIGN 3 / qftml.io.ensembles layout (plain h5py, rank 0)."""
    n = len(obs["M"])
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qftml-ensemble"
        f.attrs["format_version"] = 1
        f.attrs["n_records"] = n
        f.attrs["lattice"] = json.dumps({"shape": list(shape)})
        if configs is not None:
            f["configs"] = configs
        for k in ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "action", "slice_sums"):
            f[f"observables/{k}"] = obs[k]
        for k in range(obs["link_sums"].shape[1]):
            f[f"observables/link_sum_{k}"] = obs["link_sums"][:, k]
        for fam, v in couplings.items():
            f[f"couplings/{fam}"] = v
        f["couplings"].attrs["field"] = field
        f["couplings"].attrs["extra_offsets"] = json.dumps([list(e) for e in extra_offsets])


@pytest.mark.mpi
def test_file_hyperslab_route_inhomogeneous_s_matches_in_memory(tmp_path):
    """Inhomogeneous Gaussian S read from a file: A - S for a homogeneous target with nnn links
    needs S(phi) (stored) and nnn link sums (each rank's hyperslab of every configuration)."""
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    a = A0 + 0.1 * rng.random(SHAPE)        # inhomogeneous mass: still positive definite
    w = W0 + 0.02 * rng.random(SHAPE + (2,))
    lat = qftml.Lattice(SHAPE, comm=comm)
    act = qftml.Action.from_global(lat, {"w": w, "a": a})
    s = qftml.Sampler(act, seed=4, algorithm="independence")
    s.thermalize(200)
    blocks = np.empty((300,) + lat.local_shape)   # exact comparisons: no statistics needed
    for i in range(300):
        s.sweep(1)
        blocks[i] = s.field.local
    cf = np.empty((300,) + SHAPE)
    for sl, blk in comm.allgather((lat.local_slices, blocks)):
        cf[(slice(None),) + sl] = blk
    obs = numpy_observables(cf, {}, [(1, 0), (0, 1)])
    nn = [np.roll(cf, -1, axis=1 + mu) for mu in range(2)]
    obs["action"] = (-(w[..., 0] * cf * nn[0] + w[..., 1] * cf * nn[1]) + a * cf ** 2).sum(axis=(1, 2))
    assert np.isclose(obs["action"][-1], act.action(s.field), rtol=1e-10)  # numpy S == engine S
    path = comm.bcast(str(tmp_path / "s_inhom.h5") if comm.rank == 0 else None, root=0)
    if comm.rank == 0:
        write_ensemble_file(path, SHAPE, obs, cf, {"w": w, "a": a, "b": 0.0, "r": 0.0})
    comm.Barrier()
    ens = open_ensemble(path)
    target = TargetSpec(base="action", kappa=W0, mu2=2 * A0 - 4 * W0, lam=0.0, extra="nnn", g=0.02)
    inp = compute_inputs([ens], [target])
    assert inp.sources["S(phi)"] == "stored" and inp.sources["links(1,1)"] == "configs"
    # independent A - S: both actions evaluated in numpy on the full configurations
    sh = [np.roll(cf, (-1, -1), axis=(1, 2)), np.roll(cf, (-1, 1), axis=(1, 2))]
    s_val = obs["action"]
    a_val = (-W0 * cf * (nn[0] + nn[1]) - 0.02 * cf * (sh[0] + sh[1]) + A0 * cf ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(inp.deltas[0], a_val - s_val, rtol=1e-9, atol=1e-9)
    # the same via an inhomogeneous target file (A(phi) from each rank's hyperslab)
    from qftml.io.couplings import write_global_couplings
    cpath = path.replace(".h5", "_A.h5")
    if comm.rank == 0:
        write_global_couplings(cpath, {"w": np.full(SHAPE + (2,), W0), "a": np.full(SHAPE, A0),
                                       "g": np.full(SHAPE + (2,), 0.02)}, extra_offsets=NNN)
    comm.Barrier()
    inp2 = compute_inputs([ens], [TargetSpec(base="action", couplings=cpath)])
    assert inp2.sources[f"A(phi) of {cpath}"] == "configs"
    np.testing.assert_allclose(inp2.deltas[0], a_val - s_val, rtol=1e-9, atol=1e-9)
    # without stored S(phi) and slice sums, both come from the hyperslabs too
    bare = Ensemble(SHAPE, {k: v for k, v in obs.items() if k not in ("action", "slice_sums")},
                    {"w": w, "a": a}, configs=cf)
    inp3 = compute_inputs([bare], [target])
    assert inp3.sources["S(phi)"] == "configs"
    np.testing.assert_allclose(inp3.deltas[0], a_val - s_val, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(inp3.primaries["corr"], inp.primaries["corr"], rtol=1e-10)


@pytest.mark.mpi
def test_command_end_to_end(tmp_path):
    """`qftml reweight` on two replica files: outputs (text, JSON, HDF5, plots) with flags."""
    from qftml.cli import main

    comm = MPI.COMM_WORLD
    base = comm.bcast(str(tmp_path) if comm.rank == 0 else None, root=0)
    paths = []
    for seed in (31, 32):
        obs, cf = sample_chain(SHAPE, {"w": W0, "a": A0}, 500, seed=seed)
        p = os.path.join(base, f"s{seed}.h5")
        if comm.rank == 0:
            write_ensemble_file(p, SHAPE, obs, cf, {"w": np.full(SHAPE + (2,), W0), "a": A0, "b": 0.0, "r": 0.0})
        paths.append(p)
    comm.Barrier()
    out = os.path.join(base, "rw.h5")
    cfg = os.path.join(base, "rw.toml")
    if comm.rank == 0:
        with open(cfg, "w") as f:
            f.write(f'[reweight]\nensembles = {json.dumps(paths)}\ntherm = 100\nobservables = ["phi2", "m2", "chi"]\n'
                    f'[target]\nda = 0.02\n[scan]\nkey = "da_imag"\nvalues = [0.0, 0.1, 0.2, 2.0, 4.0]\n'
                    f'[output]\npath = "{out}"\n')
    comm.Barrier()
    assert main(["reweight", cfg, "--quiet"]) == 0
    if comm.rank == 0:
        res = json.load(open(out.replace(".h5", ".json")))
        pts = res["points"]
        assert [p["params"]["da_imag"] for p in pts] == [0.0, 0.1, 0.2, 2.0, 4.0]
        assert res["replica_lengths"] == [400, 400]   # therm = 100 dropped from each replica
        assert pts[0]["reliable"] and pts[1]["reliable"]
        assert not pts[-1]["reliable"] and "phase" in pts[-1]["flags"]
        for p, x in zip(pts[:3], (0.0, 0.1, 0.2)):
            G = exact.gaussian_propagator(SHAPE, W0, A0 + 0.02 + 1j * x)
            o = p["observables"]["phi2"]
            assert abs(o["value"] - G[0, 0].real) <= NSIG * o["error"]
            assert abs(o["value_imag"] - G[0, 0].imag) <= NSIG * max(o["error_imag"], 1e-12)
        with h5py.File(out, "r") as f:
            assert list(f["diagnostics/reliable"][()]) == [p["reliable"] for p in pts]
            assert f["observables/corr/value"].shape == (5, SHAPE[0])
            assert f["scan"].attrs["key"] == "da_imag"
        txt = open(out.replace(".h5", ".txt")).read()
        assert "phase" in txt and "NOT reliable" in txt
        for name in ("phi2", "m2", "chi", "diagnostics", "corr"):
            assert os.path.getsize(out.replace(".h5", f"_{name}.png")) > 1000
    # bad input through the command: exit code 2 on every rank, nothing written
    bad = os.path.join(base, "bad.toml")
    if comm.rank == 0:
        with open(bad, "w") as f:
            f.write(f'[reweight]\nensembles = ["{paths[0]}"]\n[target]\nextra = "nnn"\ng = 0.1\ndb = -1.0\n'
                    f'[output]\npath = "{base}/bad.h5"\n')
    comm.Barrier()
    assert main(["reweight", bad, "--quiet"]) == 2
    assert not os.path.exists(os.path.join(base, "bad.h5"))
