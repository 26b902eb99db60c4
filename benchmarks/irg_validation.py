"""Validation of the refined inverse RG against direct cluster ensembles at the same size (docs/irg.md).

    mpiexec -n 2 python benchmarks/irg_validation.py examples/irg_critical.toml [--sizes 128 256]
        [--direct-sweeps 40000 20000] [--every 4] [--bias-L 128] [--bias-configs 64]
        [--out irg_out/validation] [--img docs/img] [--set section.key=value ...] [--markdown FILE]

Needs the outputs of `qftml irg CONFIG` (its level files <stem>_L<n>.h5, results file, weights and
the direct L ensemble). Then:
 1. direct chains at every size in --sizes at the [action] couplings: Metropolis (sampler.hits) +
    Swendsen-Wang every sampler.cluster_every sweeps, seed derive_seed(sampler.seed, "direct_chain", L),
    observables only, one chain per rank (COMM_SELF); an existing file is reused;
 2. the table: local (<phi^2>, <phi^4>/<phi^2>^2, nn link) and global (<|m|>, chi, U, xi2) observables and
    G(k) = <|phi~(k)|^2>/V at k = 2 pi n / L along direction 0 (n = 0..3, from the slice sums) of every
    upscaled level against the direct ensemble, deviations in % and in standard errors (blocked
    jackknife; the upscaled levels are one ensemble indexed by the source configuration);
 3. exponents from the upscaled sizes (source L and its levels, one jackknife over the source index):
    gamma/nu from chi and from V <m^2>, beta/nu from <|m|>; the same from the direct sizes;
 4. nu from the flow mu2 -> mu2' between each upscaled level and the direct ensemble of its size
    (Binder matching, reweighting the upscaled configurations by their source's sum phi^2):
    lambda_k = b^(-k / nu);
 5. the bias-versus-sweeps curve at --bias-L: --bias-configs source configurations upscaled, refined by
    the constrained sweeps, then n = 0, 1, 2, 4, 8, 16, 32 unconstrained sweeps; observables against
    the direct ensemble at each n;
 6. cost: CPU seconds per upscaled configuration (the chain source -> L including refinement) and per
    independent direct configuration 2 tau_int(|m|) x CPU seconds per sweep.
Writes <out>/validation.json and plots <out>/../*_validation.png; prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import h5py
import numpy as np
from mpi4py import MPI

import qftml
from qftml.engine.rng import derive_seed
from qftml.io.ensembles import read_attrs, read_observables
from qftml.io.json_output import output_stem
from qftml.rg.pipeline import HOMOGENEOUS, load_irg_config, make_refiner
from qftml.stats import finite_size as fs
from qftml.stats.errors import jackknife, tau_int

Q_LOCAL = ("phi2", "phi4_ratio", "link")
Q_GLOBAL = ("abs_m", "chi", "U", "xi2")
N_MOM = 4


def _derived(obs, V, L, d, idx):
    """The table's quantities of one ensemble (means over idx)."""
    pick = (lambda a: a) if idx is None else (lambda a: a[idx])
    phi2 = np.mean(pick(obs["sum_phi2"])) / V
    phi4 = np.mean(pick(obs["sum_phi4"])) / V
    link = np.mean(pick(obs["sum_links_nn"])) / (d * V)
    am, m2, m4 = (np.mean(pick(obs[k])) for k in ("abs_m", "m2", "m4"))
    G = np.mean(np.abs(pick(obs["ft"])) ** 2, axis=0) / V
    xi2 = np.sqrt(max(G[0] / G[1] - 1.0, 0.0)) / (2 * np.sin(np.pi / L))
    return np.concatenate([[phi2, phi4 / phi2 ** 2, link, am, V * (m2 - am * am), 1 - m4 / (3 * m2 * m2), xi2], G])


def _load(path, L, d):
    obs = read_observables(path)
    out = {k: np.asarray(obs[k], dtype=float) for k in ("sum_phi2", "sum_phi4", "sum_links_nn", "abs_m", "m2", "m4")}
    out["ft"] = np.fft.fft(np.asarray(obs["slice_sums"], dtype=float), axis=1)[:, :N_MOM]
    return out


def direct_chains(cfg, sizes, sweeps, every, out, comm):
    from qftml.ensemble_generation import run_sample

    files = {}
    for i, (L, n) in enumerate(zip(sizes, sweeps)):
        path = os.path.join(out, f"direct_L{L}.h5")
        files[L] = path
        if i % comm.size != comm.rank or os.path.exists(path):
            continue
        smp = dict(cfg["sampler"], sweeps=int(n), every=int(every), thermalize=2000, checkpoint_every=0,
                   cluster="swendsen-wang", seed=derive_seed(cfg["sampler"]["seed"], "direct_chain", int(L)))
        t = time.process_time()
        code = run_sample({"lattice": {"shape": [L, L], "grid": []}, "action": dict(cfg["action"]), "sampler": smp,
                           "output": {"path": path, "configs": False, "overwrite": True, "batch": 0}},
                          quiet=True, comm=MPI.COMM_SELF)
        print(f"direct L={L}: exit {code}, {time.process_time() - t:.0f} s CPU", flush=True)
    comm.Barrier()
    return files


def compare(up, dr, L, d):
    """Values, errors and deviations of the upscaled (one ensemble) and direct quantities."""
    V = L ** d
    vu, eu, _ = jackknife(lambda idx: _derived(up, V, L, d, idx[0]), [len(up["m2"])], 20)
    vd, ed, _ = jackknife(lambda idx: _derived(dr, V, L, d, idx[0]), [len(dr["m2"])], 20)
    return {"up": vu.tolist(), "dup": eu.tolist(), "direct": vd.tolist(), "ddirect": ed.tolist(),
            "rel": ((vu - vd) / vd).tolist(), "sigma": ((vu - vd) / np.sqrt(eu ** 2 + ed ** 2)).tolist()}


def _fit(Ls, vals):
    return fs.fss_slope(Ls, vals)


def exponents(series_by_L, d, joint):
    """gamma/nu (chi, V<m^2>) and beta/nu over the sizes; joint: one ensemble for all sizes (shared index)."""
    Ls = sorted(series_by_L)

    def f(idx):
        q = []
        for i, L in enumerate(Ls):
            o = series_by_L[L]
            j = idx[0] if joint else idx[i]
            pick = (lambda a: a) if j is None else (lambda a: a[j])
            am, m2 = np.mean(pick(o["abs_m"])), np.mean(pick(o["m2"]))
            q.append((L ** d * (m2 - am * am), L ** d * m2, am))
        q = np.array(q)
        return [_fit(Ls, q[:, 0]), _fit(Ls, q[:, 1]), -_fit(Ls, q[:, 2])]

    lengths = [len(series_by_L[Ls[0]]["m2"])] if joint else [len(series_by_L[L]["m2"]) for L in Ls]
    v, e, _ = jackknife(f, lengths, 20)
    return {"sizes": Ls, "gamma_nu_chi": [v[0], e[0]], "gamma_nu_m2": [v[1], e[1]], "beta_nu": [v[2], e[2]]}


def flows(levels, directs, src_sum_phi2, mu2_0, b, L0, d):
    """nu from Binder matching of each upscaled level (reweighted by the source's sum phi^2) with the direct
    ensemble of its size: lambda_k = b^(-k/nu)."""
    out = {}
    for k, L in enumerate(sorted(levels), start=1):
        if L not in directs:
            continue
        up = fs.Series(f"up {L}", {**levels[L], "sum_phi2": src_sum_phi2}, L ** d, L, mu2_0)
        dr = fs.Series(f"direct {L}", directs[L], L ** d, L, mu2_0)
        w_src = fs.ess_window(up, mu2_0)       # the weights depend on the source's sum phi^2 only
        w_dr = fs.ess_window(dr, mu2_0)
        grid = np.linspace(mu2_0 - 0.6 * w_src, mu2_0 + 0.6 * w_src, 7)
        kk = np.log(L / L0) / np.log(b)        # upscaling steps

        def f(idx, up=up, dr=dr, grid=grid, w_dr=w_dr, kk=kk):
            lam = fs.flow_slope(up, dr, grid, (mu2_0 - w_dr, mu2_0 + w_dr), idx)
            return [lam, kk * np.log(b) / np.log(1 / lam) if 0 < lam < 1 else np.nan]

        v, e, _ = jackknife(f, [up.n, dr.n], 20)
        out[L] = {"lambda": [v[0], e[0]], "nu": [v[1], e[1]], "steps": float(kk), "window_src": w_src,
                  "window_direct": w_dr}
    return out


def _sym_hist(x, edges):
    """Histogram of x and -x (the theory is Z2 symmetric; a few configurations are not)."""
    return np.histogram(x, edges)[0] + np.histogram(-np.asarray(x), edges)[0]


def bias_curve(cfg, irg_files, L_target, n_cfg, directs, d, ns=(0, 1, 2, 4, 8, 16, 32)):
    """Observables after n unconstrained sweeps following the constrained refinement at L_target."""
    from qftml.rg.inverse import ConfigurationMeasure, InverseRG, fine_lattice

    comm = MPI.COMM_WORLD
    irg, act = cfg["irg"], cfg["action"]
    model = InverseRG.load(irg_files["weights"])
    L0 = cfg["lattice"]["shape"][0]
    with h5py.File(irg_files["direct_L"], "r") as f:
        lat = qftml.Lattice((L0, L0), comm=comm)
        pick = np.linspace(0, f["configs"].shape[0] - 1, n_cfg).astype(int)
        src = np.stack([f["configs"][i][lat.local_slices] for i in pick])
    lats = [lat]
    while lats[-1].shape[0] < L_target:
        lats.append(fine_lattice(lats[-1], irg["b"]))
    refiners = [None] + [make_refiner(cfg, x) for x in lats[1:]]
    meas = ConfigurationMeasure(lats[-1], **{k: act[k] for k in HOMOGENEOUS})
    obs = {n: {k: [] for k in ("sum_phi2", "sum_phi4", "sum_links_nn", "abs_m", "m2", "m4", "slice_sums")}
           for n in ns}
    t_up = 0.0
    edges = np.linspace(-3.5, 3.5, 71)
    hist = {"linear": np.zeros(70), "constrained": np.zeros(70), "relaxed": np.zeros(70)}
    for i, c in zip(pick, src):
        y = c[None]
        for k in range(1, len(lats)):      # the linear path, for the local distribution
            _, y = model.upscale(lats[k - 1], y, seed=irg["seed"], first_config=int(i), level=k, fine=lats[k])
        hist["linear"] += _sym_hist(y[0], edges)
        t = time.process_time()
        x = c[None]
        for k in range(1, len(lats)):
            _, x = model.upscale(lats[k - 1], x, seed=irg["seed"], first_config=int(i), level=k, fine=lats[k])
            if refiners[k] is not None:
                refiners[k].relax = 0 if k == len(lats) - 1 else refiners[k].relax
                x = refiners[k].refine(x[0], int(i), k)[None]
        t_up += time.process_time() - t
        field = qftml.Field(lats[-1])
        field.local = x[0]
        r = refiners[-1]
        s = qftml.Sampler(meas.action, seed=derive_seed(r.seed, "irg_relax", int(i), len(lats) - 1), hits=r.hits,
                          step=r.relax_step, start="keep", field=field, cluster=r.cluster,
                          cluster_every=r.cluster_every)
        done = 0
        hist["constrained"] += _sym_hist(x[0], edges)
        for n in ns:
            s.sweep(n - done)
            done = n
            o = meas(field.local)
            if n == r.relax or (r.relax == 0 and n == ns[-1]):
                hist["relaxed"] += _sym_hist(field.local, edges)
            for k in obs[n]:
                obs[n][k].append(o[k])
    V = L_target ** d
    dr = directs[L_target]
    tot = {k: comm.allreduce(v) for k, v in hist.items()}
    out = {"n": list(ns), "cpu_s_per_config_upscale": t_up / n_cfg, "rows": {}, "edges": edges.tolist(),
           "hist": {k: (v / v.sum() / np.diff(edges)).tolist() for k, v in tot.items()}}
    for n in ns:
        o = {k: np.asarray(v, dtype=float) for k, v in obs[n].items()}
        o["ft"] = np.fft.fft(o.pop("slice_sums"), axis=1)[:, :N_MOM]
        out["rows"][n] = compare(o, dr, L_target, d)
    del V
    return out


def cost(directs_files, sizes, cfg, d):
    """CPU s per sweep (Metropolis + SW, one rank) and tau_int(|m|) of the direct chains."""
    smp = cfg["sampler"]
    rows = {}
    for L in sizes:
        obs = read_observables(directs_files[L])
        every = read_attrs(directs_files[L])["sampler"]["every"]
        tau, dtau = tau_int(np.asarray(obs["abs_m"], dtype=float))
        lat = qftml.Lattice((L, L), comm=MPI.COMM_SELF)
        s = qftml.Sampler(qftml.Action.homogeneous(lat, **{k: cfg["action"][k] for k in HOMOGENEOUS}), seed=1,
                          hits=smp["hits"], cluster="swendsen-wang", cluster_every=smp["cluster_every"])
        s.sweep(20)
        n = max(10, int(2e6 / L ** d))
        t = time.process_time()
        s.sweep(n)
        sec = (time.process_time() - t) / n
        rows[L] = {"tau_int_sweeps": [tau * every, dtau * every], "cpu_s_per_sweep": sec,
                   "cpu_s_per_independent": 2 * tau * every * sec}
    return rows


NAMES = ["<phi^2>", "<phi^4>/<phi^2>^2", "nn link", "<|m|>", "chi", "U", "xi2"] + [f"G(n={n})" for n in range(N_MOM)]


def plots(result, img, direct_hist=None):
    """<img>_observables.png (upscaled vs direct against L), <img>_bias.png (deviation vs unconstrained
    sweeps), <img>_local.png (distribution of phi)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qftml.plots import save_figure

    paths = []
    table = result["table"]
    Ls = sorted(int(L) for L in table)
    fig, axes = plt.subplots(2, 4, figsize=(13, 6))
    for q, ax in enumerate(axes.ravel()[:7]):
        for key, lab, mk in (("direct", "direct (SW)", "o"), ("up", "refined upscaled", "s")):
            v = np.array([table[L][key][q] for L in Ls])
            e = np.array([table[L]["d" + key][q] for L in Ls])
            ax.errorbar(Ls, v, e, marker=mk, ls="", capsize=3, label=lab)
        ax.set_xscale("log", base=2)
        if q in (3, 4, 6):
            ax.set_yscale("log")
        ax.set_title(NAMES[q])
        ax.set_xlabel("L")
    ax = axes.ravel()[7]
    for L in Ls:
        sig = np.array(table[L]["sigma"])
        ax.plot(range(len(sig)), sig, "o-", label=f"L = {L}")
    ax.axhspan(-2, 2, color="0.9")
    ax.set_xticks(range(len(NAMES)))
    ax.set_xticklabels(NAMES, rotation=90, fontsize=7)
    ax.set_title("(upscaled - direct) / sigma")
    ax.legend(fontsize=7)
    axes.ravel()[0].legend(fontsize=7)
    paths.append(save_figure(fig, f"{img}_observables.png"))
    if "bias" in result:
        b = result["bias"]
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        ns = b["n"]
        for q in range(len(NAMES)):
            rel = [100 * b["rows"][n]["rel"][q] for n in ns]
            sig = [b["rows"][n]["sigma"][q] for n in ns]
            xs = [n + 0.5 for n in ns]
            ax[0].plot(xs, rel, "o-", label=NAMES[q])
            ax[1].plot(xs, sig, "o-", label=NAMES[q])
        for a in ax:
            a.set_xscale("log")
            a.set_xlabel("unconstrained sweeps n (+ 0.5) after the constrained refinement")
        ax[0].set_ylabel("deviation from direct (%)")
        ax[1].set_ylabel("deviation / sigma")
        ax[1].axhspan(-2, 2, color="0.9")
        ax[0].legend(fontsize=6, ncol=2)
        fig.suptitle(f"bias vs sweeps at L = {result['bias_L']}")
        paths.append(save_figure(fig, f"{img}_bias.png"))
        fig, ax = plt.subplots(figsize=(6, 4))
        e = np.array(b["edges"])
        c = (e[1:] + e[:-1]) / 2
        for k, st in (("linear", ":"), ("constrained", "--"), ("relaxed", "-")):
            ax.plot(c, b["hist"][k], st, label=f"upscaled {k}")
        if direct_hist is not None:
            ax.plot(c, direct_hist, "k-", lw=0.8, label=f"direct L = {direct_hist_L(result)}")
        ax.set_xlabel("phi")
        ax.set_ylabel("density")
        ax.set_title(f"local distribution at L = {result['bias_L']}")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, f"{img}_local.png"))
    return paths


def _fmt(v, e):
    from qftml.stats.errors import format_value
    return format_value(v, e)


def markdown(result) -> str:
    """The docs tables: comparison per size, bias curve, exponents, flow, cost."""
    lines = ["| L | quantity | direct | refined upscaled | deviation | in sigma |", "|---|---|---|---|---|---|"]
    for L, t in sorted(result["table"].items(), key=lambda x: int(x[0])):
        for q, name in enumerate(NAMES):
            lines.append(f"| {L} | {name} | {_fmt(t['direct'][q], t['ddirect'][q])} | {_fmt(t['up'][q], t['dup'][q])} "
                         f"| {100 * t['rel'][q]:+.2f} % | {t['sigma'][q]:+.1f} |")
    if "bias" in result:
        b = result["bias"]
        lines += ["", f"bias vs unconstrained sweeps n at L = {result['bias_L']} (deviation in sigma):", "",
                  "| n | " + " | ".join(NAMES) + " |", "|---" * (len(NAMES) + 1) + "|"]
        for n in b["n"]:
            r = b["rows"][n] if n in b["rows"] else b["rows"][str(n)]
            lines.append(f"| {n} | " + " | ".join(f"{x:+.1f}" for x in r["sigma"]) + " |")
    lines += ["", "| exponent | sizes | value | exact |", "|---|---|---|---|"]
    for key in ("exponents_upscaled", "exponents_upscaled_beyond_source", "exponents_direct"):
        ex = result[key]
        for q, exact in (("gamma_nu_chi", 1.75), ("gamma_nu_m2", 1.75), ("beta_nu", 0.125)):
            v, e = ex[q]
            lines.append(f"| {q} ({key}) | {ex['sizes']} | {_fmt(v, e)} | {exact} ({100 * (v / exact - 1):+.1f} %, "
                         f"{(v - exact) / e:+.1f} sigma) |")
    lines += ["", "| level L | lambda | nu |", "|---|---|---|"]
    for L, f in sorted(result["flow"].items(), key=lambda x: int(x[0])):
        lines.append(f"| {L} | {_fmt(*f['lambda'])} | {_fmt(*f['nu'])} |")
    if "cost" in result:
        lines += ["", "| L | tau_int(abs m) direct (sweeps) | CPU s / sweep | CPU s / independent direct |",
                  "|---|---|---|---|"]
        for L, c in sorted(result["cost"].items(), key=lambda x: int(x[0])):
            lines.append(f"| {L} | {_fmt(*c['tau_int_sweeps'])} | {c['cpu_s_per_sweep']:.3g} | "
                         f"{c['cpu_s_per_independent']:.3g} |")
    return "\n".join(lines)


def direct_hist_L(result):
    return result.get("hist_direct_L", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--direct-sweeps", type=int, nargs="+", default=[40000, 20000])
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--bias-L", type=int, default=128)
    ap.add_argument("--bias-configs", type=int, default=64)
    ap.add_argument("--out", default="")
    ap.add_argument("--img", default="docs/img", help="directory of the plots")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one value of the irg config (as for qftml irg)")
    ap.add_argument("--direct-only", action="store_true", help="only the direct chains (before the irg run ends)")
    ap.add_argument("--markdown", default="", help="print the tables of an existing validation.json and stop")
    args = ap.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return
    comm = MPI.COMM_WORLD
    cfg = load_irg_config(args.config, args.overrides, comm=comm)
    stem = output_stem(cfg["output"]["path"])
    out = args.out or os.path.join(os.path.dirname(cfg["output"]["path"]) or ".", "validation")
    if comm.rank == 0:
        os.makedirs(out, exist_ok=True)
    comm.Barrier()
    L0, b, d, mu2_0 = cfg["lattice"]["shape"][0], cfg["irg"]["b"], 2, cfg["action"]["mu2"]
    sweeps = (args.direct_sweeps + [args.direct_sweeps[-1]] * len(args.sizes))[:len(args.sizes)]
    dfiles = direct_chains(cfg, args.sizes, sweeps, args.every, out, comm)
    if args.direct_only:
        return
    result = {"sizes": args.sizes, "config": args.config}
    directs = {L: _load(p, L, d) for L, p in dfiles.items()}
    src = _load(f"{stem}_direct_L{L0}.h5", L0, d)
    with h5py.File(cfg["output"]["path"], "r") as f:
        Ls = [int(x) for x in f["levels/L"][()]]
        src_phi2 = f[f"levels/L{L0}/sum_phi2_src"][()]
    pick = np.linspace(0, len(src["m2"]) - 1, len(src_phi2)).astype(int)
    levels = {L: _load(f"{stem}_L{L}.h5", L, d) for L in Ls[1:]}
    result["table"] = {L: compare(levels[L], directs[L], L, d) for L in args.sizes if L in levels}
    src_picked = {k: v[pick] for k, v in src.items()}
    up_sizes = {L0: src_picked, **{L: levels[L] for L in Ls[1:]}}
    result["exponents_upscaled"] = exponents(up_sizes, d, joint=True)
    result["exponents_upscaled_beyond_source"] = exponents({L: levels[L] for L in Ls[1:]}, d, joint=True)
    result["exponents_direct"] = exponents({L0: src, **directs}, d, joint=False)
    result["flow"] = flows({L: levels[L] for L in Ls[1:]}, directs, src_phi2, mu2_0, b, L0, d)
    if comm.rank == 0:
        print(json.dumps({k: result[k] for k in ("exponents_upscaled", "exponents_direct", "flow")}, indent=1),
              flush=True)
    files = {"weights": f"{stem}_weights.h5", "direct_L": f"{stem}_direct_L{L0}.h5"}
    if args.bias_L in directs:
        result["bias"] = bias_curve(cfg, files, args.bias_L, args.bias_configs, directs, d)
        result["bias_L"] = args.bias_L
    if comm.rank == 0:
        with h5py.File(files["direct_L"], "r") as f:     # the direct source's local distribution
            c = f["configs"][::max(1, f["configs"].shape[0] // 50)]
        h = _sym_hist(c, np.linspace(-3.5, 3.5, 71))
        result["hist_direct_L"] = L0
        direct_hist = h / h.sum() / 0.1
        result["hist_direct"] = direct_hist.tolist()
        result["cost"] = cost(dfiles, args.sizes, cfg, d)
        for p in plots(result, os.path.join(args.img, "irg_validation"), direct_hist):
            print(f"plot -> {p}", flush=True)
        with open(os.path.join(out, "validation.json"), "w") as f:
            json.dump(result, f, indent=1, default=float)
        print(f"-> {os.path.join(out, 'validation.json')}", flush=True)
        print(markdown(result), flush=True)
    comm.Barrier()


if __name__ == "__main__":
    main()
