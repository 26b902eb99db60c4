"""Error analysis (qftml.stats.analysis, `qftml analyze`) against exact results.

Validation (issue 3): a Gaussian ensemble made by the engine reproduces the exact <phi^2>, C(t),
G(x), chi, Binder cumulant, energy per link and the second-moment correlation length within its
own Gamma-method errors; `ising` at beta_c on 64^2 reproduces Kaufman's exact finite-lattice
energy per link. Ensembles go through the real HDF5 writer (qftml.io.ensembles) and reader.
"""
import json
import math

import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml.io.ensembles import Ensemble, EnsembleWriter, observable_layout, open_ensemble, stack_observables
from qftml.stats.analysis import analyze, cut_and_bin, format_report, two_point_samples
from qftml.stats.errors import gamma, summarize
from qftml.exact import gaussian_propagator
from qftml.exact.ising import BETA_C, kaufman_torus, onsager_energy_per_link

NSIGMA = 4.0


def shared_tmp(tmp_path, comm):
    return comm.bcast(str(tmp_path) if comm.rank == 0 else None, root=0)


def write_ensemble(path, sampler, n_records, every=1, store_configs=True):
    """Run the chain and write n_records records (collective), like `qftml sample` does."""
    lat, act = sampler.field.lattice, sampler.action
    layout = observable_layout(lat, act)
    attrs = {"lattice": {"shape": list(lat.shape)}, "action": {"field": "test"}}
    w = EnsembleWriter.create(path, lat, attrs, layout, {}, store_configs=store_configs)
    batch = 200
    done = 0
    while done < n_records:
        k = min(batch, n_records - done)
        recs, local = [], []
        for _ in range(k):
            sampler.sweep(every)
            r = sampler.measure()
            r["sweep"] = (done + len(recs) + 1) * every
            recs.append(r)
            if store_configs:
                local.append(sampler.field.local)
        w.append(np.array(local) if store_configs else None, stack_observables(recs, layout))
        done += k
    w.set_attrs(complete=True)
    w.close()


def within(summary, exact, nsigma=NSIGMA):
    return abs(summary["mean"] - exact) <= nsigma * summary["error"]


# ---------------------------------------------------------------- unit tests

def test_cut_and_bin():
    x = np.arange(10.0)
    assert np.array_equal(cut_and_bin(x, 0, 1), x)
    assert np.array_equal(cut_and_bin(x, 2, 3), [3.0, 6.0])  # [2,3,4], [5,6,7]; 8, 9 dropped
    y = np.arange(12.0).reshape(6, 2)
    assert np.array_equal(cut_and_bin(y, 0, 2), [[1, 2], [5, 6], [9, 10]])
    with pytest.raises(ValueError):
        cut_and_bin(x, -1, 1)


def test_gamma_method_on_ar1_series():
    # AR(1) x_i = rho x_{i-1} + noise: tau_int = (1 + rho) / (2 (1 - rho)), mean 0, var 1/(1-rho^2)
    rho, n = 0.8, 40000
    rng = np.random.default_rng(5)
    x = np.empty(n)
    x[0] = 0.0
    noise = rng.normal(size=n)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    s = summarize(gamma(x))
    tau_exact = (1 + rho) / (2 * (1 - rho))
    assert abs(s["tau_int"] - tau_exact) <= NSIGMA * s["tau_int_error"]
    err_exact = math.sqrt(2 * tau_exact / (1 - rho ** 2) / n)
    assert s["error"] == pytest.approx(err_exact, rel=0.25)
    assert abs(s["mean"]) <= NSIGMA * s["error"]


def test_two_point_samples_matches_direct_sum():
    rng = np.random.default_rng(2)
    c = rng.normal(size=(3, 4, 6))
    g = two_point_samples(c)
    direct = np.array([[[np.mean(ci * np.roll(ci, (-a, -b), axis=(0, 1))) for b in range(6)] for a in range(4)]
                       for ci in c])
    assert np.allclose(g, direct)


# ---------------------------------------------------------------- Gaussian validation

@pytest.mark.mpi
def test_gaussian_ensemble_matches_exact(tmp_path, comm):
    shape, kappa, mu2 = (16, 8), 1.0, 0.5
    a = (mu2 + 4 * kappa) / 2
    lat = qftml.Lattice(shape, comm=comm)
    act = qftml.Action.homogeneous(lat, kappa=kappa, mu2=mu2, lam=0.0)
    s = qftml.Sampler(act, seed=11, algorithm="independence")
    s.sweep(50)
    path = shared_tmp(tmp_path, comm) + "/gauss.h5"
    write_ensemble(path, s, n_records=4000)
    if comm.rank != 0:
        return
    ens = open_ensemble(path)
    assert ens.shape == shape and ens.n_records == 4000 and ens.has_configs
    res = analyze(ens)
    G = gaussian_propagator(shape, kappa, a)
    V = G.size
    d = res["derived"]
    assert within(d["phi2"], G[0, 0])
    # m is Gaussian with variance Gt(0)/V = 1/(mu2 V): <|m|> = sigma sqrt(2/pi), <m^4> = 3 sigma^4
    assert within(res["observables"]["m2"], 1 / (mu2 * V))
    assert within(d["chi"], (1 - 2 / np.pi) / mu2)
    assert within(d["binder"], 0.0)
    assert within(d["energy_per_link"], -(G[1, 0] + G[0, 1]) / 2)
    # Gt(p) = 1/K(p), K(p) - K(0) = 4 kappa sin^2(p/2): xi2 = sqrt(kappa/mu2) exactly, every direction
    for name in ("xi2", "xi2_dir0", "xi2_dir1"):
        assert within(d[name], np.sqrt(kappa / mu2)), name
    # slice sums (measured in C++) and configurations (written by ranks) agree exactly
    assert d["xi2"]["mean"] == pytest.approx(d["xi2_dir0"]["mean"], rel=1e-9)
    # C(t) = sum over the spatial direction of G(t, x)
    exact_c = G.sum(axis=1)
    corr = res["correlator"]
    conn = res["correlator_connected"]
    for t in range(shape[0]):
        assert abs(corr["mean"][t] - exact_c[t]) <= NSIGMA * corr["error"][t], t
        assert abs(conn["mean"][t] - exact_c[t]) <= NSIGMA * conn["error"][t], t  # <M> = 0 exactly
    # the full two-point function from the stored configurations (FFT)
    configs = np.concatenate(list(ens.iter_configs()))
    g = two_point_samples(configs)
    for x in [(0, 0), (1, 0), (0, 1), (2, 3), (8, 4)]:
        sm = summarize(gamma(g[(slice(None),) + x]))
        assert within(sm, G[x]), x
    # taus are reported and sensible for an independence-sampler chain
    assert 0.4 < res["observables"]["sum_phi2"]["tau_int"] < 10


def test_binning_keeps_mean_and_error():
    shape = (8, 12)
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=0.3, lam=0.0)
    s = qftml.Sampler(act, seed=3, algorithm="independence")
    s.sweep(20)
    recs = []
    for _ in range(4000):
        s.sweep(1)
        recs.append(s.measure())
    ens = Ensemble.from_records(recs, shape)
    r1, r10 = analyze(ens, therm=0, bin=1), analyze(ens, therm=0, bin=10)
    assert r10["n_used"] == 400
    for name in ("m2", "sum_phi2"):
        a, b = r1["observables"][name], r10["observables"][name]
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)
        # Gamma-method errors of raw and binned data agree (both include autocorrelations)
        assert b["error"] == pytest.approx(a["error"], rel=0.3)
    r_cut = analyze(ens, therm=1000)
    assert r_cut["n_used"] == 3000
    with pytest.raises(ValueError):
        analyze(ens, therm=3999, bin=2)
    text = format_report(r1)
    assert "chi" in text and "binder" in text and "tau_int" in text


# ---------------------------------------------------------------- Ising at beta_c

def test_ising_64_at_beta_c_energy_matches_kaufman(tmp_path):
    shape = (64, 64)
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=BETA_C, field="ising")
    s = qftml.Sampler(act, seed=2024, algorithm="metropolis", start="hot")
    s.sweep(2000)  # tau_int of the energy is ~60 sweeps here: 2000 sweeps are ~30 tau
    path = str(tmp_path / "ising.h5")
    # 64000 sweeps, one record every 4: ~16 s on one core
    write_ensemble(path, s, n_records=16000, every=4, store_configs=False)
    with open_ensemble(path) as ens:
        res = analyze(ens)
    e = res["derived"]["energy_per_link"]
    exact = kaufman_torus(shape, BETA_C)["e_link"]
    assert abs(e["mean"] - exact) <= NSIGMA * e["error"], (e, exact)
    # the error includes autocorrelations (tau_int in records of 4 sweeps) ...
    assert e["tau_int"] > 2.0
    # ... and is small enough to tell the 64^2 value from the infinite-volume one at 3 sigma
    finite_size = abs(exact - onsager_energy_per_link(BETA_C))
    assert e["error"] < finite_size / 3, (e, finite_size)


# ---------------------------------------------------------------- the command

@pytest.fixture
def small_file(tmp_path):
    shape = (8, 6)
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=-0.9515, lam=0.7)
    s = qftml.Sampler(act, seed=5, algorithm="metropolis")
    s.thermalize(200)
    path = str(tmp_path / "small.h5")
    write_ensemble(path, s, n_records=500, every=2)
    return path


def test_analyze_command_json(small_file, capsys):
    from qftml.cli import main

    assert main(["analyze", small_file, "--json", "--therm", "100", "--bin", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_records"] == 500 and out["n_used"] == 200 and out["shape"] == [8, 6]
    assert out["record_spacing_sweeps"] == 2
    for name in ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "action", "link_sum_0", "link_sum_1"):
        assert set(out["observables"][name]) == {"mean", "error", "tau_int", "tau_int_error"}
    assert "sweep" not in out["observables"]
    for name in ("chi", "binder", "energy_per_link", "phi2", "xi2", "xi2_dir0", "xi2_dir1"):
        assert name in out["derived"]
    assert len(out["correlator"]["mean"]) == 8
    # the JSON numbers are the analysis numbers
    with open_ensemble(small_file) as ens:
        direct = analyze(ens, therm=100, bin=2)
    assert out["derived"]["chi"]["mean"] == pytest.approx(direct["derived"]["chi"]["mean"], rel=1e-12)


def test_analyze_command_table_and_errors(small_file, tmp_path, capsys):
    from qftml.cli import main

    assert main(["analyze", small_file]) == 0
    text = capsys.readouterr().out
    assert "binder" in text and "C(t)" in text and "8x6" in text
    assert main(["analyze", str(tmp_path / "missing.h5")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["analyze", str(bad)]) == 2
    assert main(["analyze", small_file, "--therm", "499"]) == 2
    assert "records left" in capsys.readouterr().err
