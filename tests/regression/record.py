"""Fingerprints of chains, learn histories, irg and reweighting results (issue 11's reference).

    python tests/regression/record.py OUT.json      (one rank; runs in about a minute)

Each entry is a sha256 of the bytes a run produced (fields, histories, result tables), so that a
refactoring can be checked to change nothing, and the fixes that do change results are named.
The recorded reference of df196fb is tests/data/regression_df196fb.json; tests/test_regression.py
compares against it.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from mpi4py import MPI


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def chain(shape, sweeps=20, **kw):
    import qftml

    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    field = kw.pop("field", "real")
    extra = kw.pop("extra", None)
    inhom = kw.pop("inhomogeneous", False)
    h = kw.pop("h", 0.0)
    if inhom:
        rng = np.random.default_rng(7)
        d = len(shape)
        act = qftml.Action(lat, rng.uniform(0.5, 1.0, tuple(shape) + (d,)), rng.uniform(1.8, 2.5, shape),
                           rng.uniform(0.1, 0.3, shape), rng.uniform(-0.1, 0.1, shape), field=field)
    else:
        act = qftml.Action.homogeneous(lat, 1.0, -0.9515, 0.7, h=h, field=field, extra=extra, g=0.3 if extra else 0.0)
    s = qftml.Sampler(act, seed=kw.pop("seed", 3), **kw)
    s.thermalize(10)
    s.sweep(sweeps)
    m = s.measure()
    return digest(s.field.local, [m["M"], m["sum_phi2"], m["action"]], [s.step])


def run_cli(args, cwd):
    exe = os.path.join(os.path.dirname(sys.executable), "qftml")
    subprocess.run([exe, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def h5_digest(path, groups):
    out = {}
    with h5py.File(path, "r") as f:
        for g in groups:
            names = []
            f[g].visit(lambda n: names.append(n) if isinstance(f[g][n], h5py.Dataset) else None)
            for n in sorted(names):
                ds = f[g][n]
                if ds.dtype.kind in "fiu" and not n.startswith("time_"):
                    out[f"{g}/{n}"] = digest(ds[()])
    return out


LEARN = """[lattice]
shape = [8, 8]
[sampler]
algorithm = "independence"
thermalize = 50
seed = 1
[target]
kappa = 1.0
mu2 = -0.9515
lam = 0.7
[model]
seed = 5
[training]
epochs = 6
samples = 20
f_every = 3
f_nodes = 3
f_samples = 20
f_thermalize = 20
[output]
path = "learn.h5"
plots = false
"""

IRG = """[lattice]
shape = [16, 16]
[action]
mu2 = -0.95
[sampler]
thermalize = 500
sweeps = 20000
every = 10
seed = 3
[irg]
levels = 2
upscale_configs = 8
n_bins = 10
plots = false
[output]
path = "irg.h5"
"""


SAMPLE = """[lattice]
shape = [8, 8]
[action]
mu2 = 0.5
lam = 0.0
[sampler]
thermalize = 100
sweeps = 400
every = 2
seed = 4
[output]
path = "ens.h5"
"""

REWEIGHT = """[reweight]
ensembles = ["ens.h5"]
n_bins = 10
plot = false
[target]
base = "ensemble"
da_imag = 0.05
extra = "nnn"
g = 0.02
[scan]
key = "da"
start = -0.05
stop = 0.05
num = 3
[output]
path = "rw.h5"
"""


def record():
    out = {}
    out["chain/metropolis_16x16"] = chain((16, 16))
    out["chain/metropolis_hits3"] = chain((16, 16), hits=3)
    # keys of df196fb, when the independence sampler was called heatbath
    out["chain/heatbath"] = chain((16, 16), algorithm="independence")
    out["chain/heatbath_hits2"] = chain((16, 16), algorithm="independence", hits=2)
    out["chain/ising"] = chain((16, 16), field="ising")
    out["chain/nnn"] = chain((16, 16), extra="nnn")
    out["chain/h"] = chain((16, 16), h=0.2)
    out["chain/inhomogeneous"] = chain((16, 16), inhomogeneous=True)
    out["chain/3d"] = chain((8, 8, 8))
    out["chain/4d"] = chain((4, 4, 4, 4))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "learn.toml"), "w") as f:
            f.write(LEARN)
        run_cli(["learn", "learn.toml", "--quiet"], tmp)
        for k, v in h5_digest(os.path.join(tmp, "learn.h5"), ["history", "free_energy", "couplings"]).items():
            out[f"learn/{k}"] = v
        with open(os.path.join(tmp, "irg.toml"), "w") as f:
            f.write(IRG)
        run_cli(["irg", "irg.toml", "--quiet"], tmp)
        with h5py.File(os.path.join(tmp, "irg.h5"), "r") as f:
            ex = f["exponents"][()]
            out["irg/exponents"] = digest(ex["value"], ex["error"])
            out["irg/weights"] = digest(f["weights/filters"][()], [f["weights"].attrs["sigma"]])
            out["irg/direct"] = digest(f["pairs"]["mu2_c"], f["pairs"]["gamma_nu"])
            out["irg/levels"] = digest(*[f[f"levels/L{L}/m2"][()] for L in (32, 64)])
        for name, text in (("sample.toml", SAMPLE), ("rw.toml", REWEIGHT)):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        run_cli(["sample", "sample.toml", "--quiet"], tmp)
        out["sample/configs"] = digest(h5py.File(os.path.join(tmp, "ens.h5"), "r")["configs"][()])
        run_cli(["reweight", "rw.toml", "--quiet"], tmp)
        for k, v in h5_digest(os.path.join(tmp, "rw.h5"), ["observables", "diagnostics"]).items():
            out[f"reweight/{k}"] = v
    return out


if __name__ == "__main__":
    result = record()
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(json.dumps(result, indent=1, sort_keys=True))
