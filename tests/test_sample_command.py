"""`qftml sample` end to end, in subprocesses under mpiexec (serial pass; not marked mpi):
bad configs, resume on another rank count, SIGKILL mid-run, SIGTERM preemption, physics
mismatch, damaged files."""
import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from launcher import MPIEXEC, QFTML, assert_exit_after_forwarded_signal, rank_pid


CONFIG = """\
[lattice]
shape = [16, 8]
[action]
kappa = 0.3
mu2 = 0.1
lam = 0.5
[sampler]
sweeps = 100
thermalize = 20
every = 2
seed = 11
checkpoint_every = 10
[output]
path = "{path}"
"""


def qftml(args, ranks=2, timeout=120, cwd=None):
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [QFTML, "sample", *args, "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def write_config(directory, name="run", text=CONFIG, **fmt):
    path = os.path.join(directory, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text.format(path=os.path.join(directory, f"{name}.h5"), **fmt))
    return path


def load(path):
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_records"])
        return (f["configs"][:n], {k: v[:n] for k, v in f["observables"].items()},
                {k: f.attrs[k] for k in f.attrs})


def assert_same_chain(a, b):
    """Configurations and observables bit for bit: the engine's global sums are reproducible
    (fixed-point, cpp/comms/reproducible_sum.hpp), whatever rank count measured each record."""
    (ca, oa, _), (cb, ob, _) = a, b
    assert ca.shape == cb.shape and np.array_equal(ca, cb)
    for name in oa:
        assert np.array_equal(oa[name], ob[name]), name
    assert np.array_equal(oa["sweep"], ob["sweep"])


def test_bad_configs_exit_2_naming_the_key_and_write_nothing(tmp_path):
    d = str(tmp_path)
    bad = CONFIG.replace("every = 2", "every = 0\nsweps = 5").replace('[action]', '[action]\nfield = "spin"')
    cfg = write_config(d, text=bad)
    r = qftml([cfg])
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("qftml sample: error") == 1  # one message (rank 0), not one per rank
    for key in ("sampler.sweps", "sampler.every = 0", "action.field = 'spin'", "'real', 'ising'"):
        assert key in r.stderr, (key, r.stderr)
    assert "Traceback" not in r.stderr
    # an action that is not normalisable (b = 0, negative mass) is refused before anything is written
    cfg = write_config(d, name="gauss")
    r = qftml([cfg, "--set", "action.lam=0.0", "--set", "action.mu2=-2.0"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    r2 = qftml([cfg, "--set", "sampler.sweeps=15"], ranks=0)
    assert r2.returncode == 2 and "sampler.sweeps = 15 must be a multiple of sampler.every = 2" in r2.stderr
    assert sorted(os.listdir(d)) == ["gauss.toml", "run.toml"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """2 ranks x 100 sweeps, uninterrupted."""
    d = str(tmp_path_factory.mktemp("ref"))
    r = qftml([write_config(d, "ref")])
    assert r.returncode == 0, r.stderr
    return os.path.join(d, "ref.h5")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """2 ranks x 50 sweeps, then resumed on 4 ranks up to 100 sweeps."""
    d = str(tmp_path_factory.mktemp("res"))
    cfg = write_config(d, "res")
    r = qftml([cfg, "--set", "sampler.sweeps=50"])
    assert r.returncode == 0, r.stderr
    r = qftml([cfg, "--resume"], ranks=4)
    assert r.returncode == 0, r.stderr
    return os.path.join(d, "res.h5")


def test_resume_on_four_ranks_continues_the_chain_bit_for_bit(reference, resumed):
    ref, res = load(reference), load(resumed)
    assert ref[0].shape == (50, 16, 8)
    assert_same_chain(ref, res)
    runs = res[2]["runs"]
    assert '"n_ranks": 2' in runs and '"n_ranks": 4' in runs and bool(res[2]["complete"])
    expected_path = "mpio" if h5py.get_config().mpi else "rank0-blocks"
    assert res[2]["write_path"] == expected_path and runs.count(f'"write_path": "{expected_path}"') == 2
    assert res[2]["n_ranks"] == 4 and list(res[2]["process_grid"]) == [2, 2]
    with h5py.File(reference + ".ckpt") as a, h5py.File(resumed + ".ckpt") as b:
        assert np.array_equal(a["field"][:], b["field"][:])  # identical final configuration
        assert a.attrs["sweep_index"] == b.attrs["sweep_index"] == 120
        assert a.attrs["step"] == b.attrs["step"]


def test_resume_refuses_other_physics_and_lists_the_differences(resumed):
    cfg = resumed[:-3] + ".toml"
    before = open(resumed, "rb").read()
    r = qftml([cfg, "--resume", "--set", "action.kappa=0.25", "--set", "sampler.seed=12",
               "--set", "lattice.shape=[8, 8]"], ranks=0)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    for line in ("action.kappa: checkpoint 0.3, config 0.25", "sampler.seed: checkpoint 11, config 12",
                 "lattice.shape: checkpoint [16, 8], config [8, 8]"):
        assert line in r.stderr, r.stderr
    assert open(resumed, "rb").read() == before
    # not resuming onto an existing file is refused too
    r = qftml([cfg], ranks=0)
    assert r.returncode == 2 and "exists" in r.stderr and "--resume" in r.stderr


def _wait_for_checkpoint(path, records, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            with h5py.File(path, "r") as f:
                if f.attrs["n_records"] >= records:
                    return
        except (OSError, KeyError):
            pass  # not there yet
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


LONG = ["--set", "sampler.sweeps=2000000", "--set", "output.batch=4"]


def test_sigkill_mid_run_leaves_readable_records_and_resume_on_other_ranks_is_exact(tmp_path):
    d = str(tmp_path)
    cfg = write_config(d, "kill")
    out = os.path.join(d, "kill.h5")
    proc = subprocess.Popen([MPIEXEC, "-n", "2", QFTML, "sample", cfg, "--quiet", *LONG],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for_checkpoint(out + ".ckpt", 12, proc)
        time.sleep(np.random.default_rng().uniform(0, 0.3))  # anywhere: mid-batch, mid-flush, mid-checkpoint
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    with h5py.File(out + ".ckpt", "r") as f:
        ckpt_records = int(f.attrs["n_records"])
    with h5py.File(out, "r") as f:  # plain h5py, after SIGKILL
        n = int(f.attrs["n_records"])
        assert n >= ckpt_records >= 12
        phi = f["configs"][:n]
        assert np.all(np.isfinite(phi)) and f["observables/M"].shape[0] >= n
        np.testing.assert_allclose(f["observables/M"][:n], phi.sum(axis=(1, 2)), rtol=1e-10, atol=1e-10)
        assert np.array_equal(f["observables/sweep"][:n], 20 + 2 * np.arange(1, n + 1))
    # resume on 4 ranks for a few more records: the same chain as an uninterrupted 2-rank run
    sweeps = ["--set", f"sampler.sweeps={2 * (ckpt_records + 6)}"]
    r = qftml([cfg, "--resume", *sweeps], ranks=4)
    assert r.returncode == 0, r.stderr
    ref = os.path.join(d, "ref.h5")
    r = qftml([cfg, *sweeps, "--set", f"output.path={ref!r}"])
    assert r.returncode == 0, r.stderr
    assert_same_chain(load(ref), load(out))
    assert load(out)[0].shape[0] == ckpt_records + 6


@pytest.mark.parametrize("to", ["mpiexec", "ranks"])
def test_sigterm_checkpoints_and_exits_3_then_resumes(tmp_path, to):
    """SIGTERM to mpiexec (which forwards it to the ranks: a terminal, `kill` of the job) or to every
    rank itself (as Slurm signals the tasks of a job step). Every rank exits 3; mpiexec passes that
    on, except hydra < 4.1 after a signal it forwarded (tests/launcher.py, README "Exit codes")."""
    d = str(tmp_path)
    cfg = write_config(d, "term")
    out = os.path.join(d, "term.h5")
    proc = subprocess.Popen([MPIEXEC, "-n", "2", QFTML, "sample", cfg, "--quiet", *LONG],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_checkpoint(out + ".ckpt", 1, proc)
        if to == "mpiexec":
            proc.send_signal(signal.SIGTERM)
        else:
            for pid in [rank_pid(cfg, r) for r in range(2)]:
                os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leave no rank behind if the test failed
        except ProcessLookupError:
            pass
    if to == "ranks":
        assert proc.returncode == 3, err
    else:
        assert_exit_after_forwarded_signal(proc.returncode, 3, err)
    assert "stopped by SIGTERM" in err and "--resume" in err
    with h5py.File(out, "r") as f, h5py.File(out + ".ckpt", "r") as c:
        assert f.attrs["n_records"] == c.attrs["n_records"] and not f.attrs["complete"]
        stopped_at = int(c.attrs["sweep_index"])
        assert '"exit": "preempted"' in f.attrs["runs"]
    r = qftml([cfg, "--resume", "--set", f"sampler.sweeps={stopped_at + 10}"], ranks=0)
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"] and f.attrs["n_records"] == (stopped_at + 10) // 2
        assert f["observables/sweep"][-1] == stopped_at + 30


def test_damaged_files_give_one_clear_message(tmp_path):
    d = str(tmp_path)
    cfg = write_config(d, "dmg")
    out = os.path.join(d, "dmg.h5")
    assert qftml([cfg, "--set", "sampler.sweeps=20"], ranks=0).returncode == 0
    good_ckpt = open(out + ".ckpt", "rb").read()
    with open(out + ".ckpt", "wb") as f:
        f.write(good_ckpt[: len(good_ckpt) // 2])
    r = qftml([cfg, "--resume"])
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr and "Traceback" not in r.stderr, r.stderr
    with open(out + ".ckpt", "wb") as f:
        f.write(good_ckpt)
    data = open(out, "rb").read()
    with open(out, "wb") as f:
        f.write(data[:2000])
    r = qftml([cfg, "--resume"])
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_gaussian_ensemble_matches_exact_propagator(tmp_path):
    """In-process run (1 rank): the stored observables of a free field agree with the exact
    <phi^2> = G(0) and <phi_x phi_{x+e_mu}> = G(e_mu) within 4 autocorrelation-aware sigma."""
    import pyerrors as pe
    from mpi4py import MPI

    from qftml.exact import gaussian_propagator
    from qftml.ensemble_generation import load_sample_config, run_sample

    free = CONFIG.replace("lam = 0.5", "lam = 0.0").replace("mu2 = 0.1", "mu2 = 0.4")
    cfg = write_config(str(tmp_path), "free", text=free.replace("[sampler]", '[sampler]\nalgorithm = "independence"'))
    cfg = load_sample_config(cfg, ["sampler.sweeps=1000", "sampler.checkpoint_every=0"], MPI.COMM_SELF)
    assert run_sample(cfg, quiet=True, comm=MPI.COMM_SELF) == 0
    _, obs, attrs = load(str(tmp_path / "free.h5"))
    V, shape = 16 * 8, (16, 8)
    G = gaussian_propagator(shape, w=0.3, a=0.5 * (0.4 + 4 * 0.3))
    for name, exact in (("sum_phi2", G[0, 0]), ("link_sum_0", G[1, 0]), ("link_sum_1", G[0, 1])):
        o = pe.Obs([obs[name] / V], ["free"])
        o.gamma_method()
        assert abs(o.value - exact) < 4 * o.dvalue, (name, o.value, o.dvalue, exact)
        assert o.dvalue < 0.05 * exact  # the test has power


def test_the_reading_snippet_in_the_docs_runs(reference):
    """docs/ensembles.md's plain-h5py snippet, run on a real ensemble."""
    import contextlib
    import io
    import re

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "ensembles.md")).read()
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1).replace('"phi4_critical.h5"', repr(reference))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(snippet, {})
    n, m_mean, energy, kappa, shape = out.getvalue().split(maxsplit=4)
    assert int(n) == 50 and float(kappa) == 0.3 and shape.strip() == "(16, 8)"
    assert 0 < float(energy) < 2  # phi_x phi_{x+mu} summed over mu: positive for kappa > 0


def test_inhomogeneous_couplings_file_and_refusal_when_it_changes(tmp_path):
    """[action] couplings = file: each rank reads its hyperslab; the stored action values equal S
    computed independently with numpy from the stored configurations; editing the file afterwards
    makes --resume refuse (its sha256 is part of the physics)."""
    from qftml.io.couplings import write_global_couplings

    d = str(tmp_path)
    rng = np.random.default_rng(5)
    c = {"w": 0.1 + 0.3 * rng.random((16, 8, 2)), "a": 0.8 + 0.4 * rng.random((16, 8)),
         "b": 0.1 + 0.2 * rng.random((16, 8)), "r": 0.1 * rng.standard_normal((16, 8))}
    cfile = os.path.join(d, "theta.h5")
    write_global_couplings(cfile, c)
    text = CONFIG.replace("[action]", f"[action]\ncouplings = {cfile!r}")
    cfg = write_config(d, "inh", text=text)
    r = qftml([cfg, "--set", "sampler.sweeps=20"])
    assert r.returncode == 0, r.stderr
    phi, obs, attrs = load(os.path.join(d, "inh.h5"))
    S = (-sum((c["w"][..., mu] * phi * np.roll(phi, -1, axis=1 + mu)).sum(axis=(1, 2)) for mu in range(2))
         + (c["a"] * phi ** 2 + c["b"] * phi ** 4 + c["r"] * phi).sum(axis=(1, 2)))
    np.testing.assert_allclose(obs["action"], S, rtol=1e-11)
    with h5py.File(os.path.join(d, "inh.h5"), "r") as f:
        for fam in ("w", "a", "b", "r"):
            assert np.array_equal(f["couplings"][fam][...], c[fam])
    c["a"][3, 4] += 0.01
    write_global_couplings(cfile, c)
    r = qftml([cfg, "--resume", "--set", "sampler.sweeps=40"], ranks=0)
    assert r.returncode == 2 and "action.couplings_sha256: checkpoint" in r.stderr, r.stderr


def test_preempted_during_thermalisation_resumes_with_the_tuned_step(tmp_path, monkeypatch):
    """In-process (1 rank): a stop request during thermalisation (the Metropolis step is still
    being tuned) checkpoints and returns 3; resuming gives the uninterrupted chain bit for bit."""
    from mpi4py import MPI

    from qftml import ensemble_generation as sampling
    d = str(tmp_path)
    text = CONFIG.replace("thermalize = 20", "thermalize = 60")
    over = ["sampler.sweeps=20", "sampler.checkpoint_every=0"]
    ref_cfg = sampling.load_sample_config(write_config(d, "ref", text=text), over, MPI.COMM_SELF)
    assert sampling.run_sample(ref_cfg, quiet=True, comm=MPI.COMM_SELF) == 0
    cfg = sampling.load_sample_config(write_config(d, "pre", text=text), over, MPI.COMM_SELF)
    calls = []

    def agreed(self):  # as if SIGTERM arrived during the second chunk of thermalisation
        calls.append(1)
        self.signame = "SIGTERM"
        return len(calls) == 2

    monkeypatch.setattr(sampling.StopFlag, "agreed", agreed)
    monkeypatch.setattr(sampling, "_THERM_CHUNK_MAX", 25)  # stop checks after sweeps 25, 50, 60
    assert sampling.run_sample(cfg, quiet=True, comm=MPI.COMM_SELF) == sampling.EXIT_PREEMPTED
    with h5py.File(os.path.join(d, "pre.h5.ckpt"), "r") as c:
        assert c.attrs["phase"] == "thermalize" and c.attrs["sweep_index"] == 50
        assert c.attrs["step"] != 1.0  # tuned
    monkeypatch.undo()
    assert sampling.run_sample(cfg, resume=True, quiet=True, comm=MPI.COMM_SELF) == 0
    a, b = load(os.path.join(d, "ref.h5")), load(os.path.join(d, "pre.h5"))
    assert_same_chain(a, b)
    assert a[2]["step"] == b[2]["step"]


def test_missing_output_directory_is_created(tmp_path):
    # README's first steps write to out/ens.h5 in a fresh clone.
    cfg = write_config(str(tmp_path))
    target = tmp_path / "new" / "nested" / "ens.h5"
    r = qftml([cfg, "--set", f"output.path={json.dumps(str(target))}", "--set", "sampler.sweeps=10"], ranks=None)
    assert r.returncode == 0, r.stderr
    assert target.exists()


def _as_format_1(h5_path):
    """Rewrite a file and its checkpoint as format 1 wrote them: algorithm 'heatbath', version 1."""
    from qftml.io.checkpoints import physics_hash

    for path, version in ((h5_path, True), (h5_path + ".ckpt", False)):
        with h5py.File(path, "r+") as f:
            physics = json.loads(f.attrs["physics"])
            physics["sampler"]["algorithm"] = "heatbath"
            f.attrs["physics"] = json.dumps(physics)
            f.attrs["physics_hash"] = physics_hash(physics)
            if version:
                f.attrs["format_version"] = 1


def test_format_1_chain_with_the_old_algorithm_name_resumes_bit_for_bit(tmp_path):
    """Format 2 keeps the RNG streams below sweep 2^32 and renames heatbath -> independence: a chain
    written by format 1 continues as the same chain (the old name in the config gets a note), the
    file becomes format 2; a format-1 chain past sweep 2^32 (its streams repeated) is refused."""
    d = str(tmp_path)
    text = CONFIG.replace("[sampler]", '[sampler]\nalgorithm = "independence"')
    ref = write_config(d, "ref", text=text)
    assert qftml([ref], ranks=0).returncode == 0
    old = write_config(d, "old", text=text.replace('"independence"', '"heatbath"'))
    r = qftml([old, "--set", "sampler.sweeps=50"], ranks=0)
    assert r.returncode == 0 and "sampler.algorithm = 'heatbath' is deprecated, use 'independence'" in r.stderr
    _as_format_1(os.path.join(d, "old.h5"))
    with h5py.File(os.path.join(d, "old.h5.ckpt"), "r+") as f:
        sweep_index = int(f.attrs["sweep_index"])
        f.attrs["sweep_index"] = 2 ** 32
    r = qftml([old, "--resume"], ranks=0)
    assert r.returncode == 2 and "format 1" in r.stderr and "repeat after 2^32 sweeps" in r.stderr, r.stderr
    with h5py.File(os.path.join(d, "old.h5.ckpt"), "r+") as f:
        f.attrs["sweep_index"] = sweep_index
    r = qftml([old, "--resume"], ranks=0)
    assert r.returncode == 0, r.stderr
    assert_same_chain(load(os.path.join(d, "ref.h5")), load(os.path.join(d, "old.h5")))
    attrs = load(os.path.join(d, "old.h5"))[2]
    assert int(attrs["format_version"]) == 2 and json.loads(attrs["physics"])["sampler"]["algorithm"] == "independence"
    assert json.loads(attrs["sampler"])["algorithm"] == "independence"
