"""Fault injection, bad input and interrupts (issue 12, cases 1-5, 12-14, 16-18), every case under
`mpiexec -n 2` in a subprocess with a timeout: a hang fails the test instead of stalling the suite.
Each test asserts the exit code, that the message names the file or key, and that nothing was
written or damaged. Several command lines of one case share a launch (tests/fault_batch.py runs
them one after another under qftml.cli.main and reports every rank's exit code and stderr).
Serial pass (not marked mpi): the ranks are the subprocess's."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from launcher import MPIEXEC, QFTML, assert_exit_after_forwarded_signal, rank_pid
from configs import SAMPLE, learn_config

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, QFTML_AGREE_TIMEOUT="2")   # how long a failed rank waits for the others

LEARN = learn_config(dict(epochs=1, samples=5, f_nodes=2, f_samples=10, f_thermalize=0), "{path}", shape=(4, 4),
                     thermalize=5, tied=False)
IRG = """\
[lattice]
shape = [8, 8]
[action]
kappa = 1.0
mu2 = -0.95
lam = 0.7
[sampler]
sweeps = 20
thermalize = 10
every = 2
[irg]
filter_size = 2
levels = 1
epochs = 5
plots = false
[output]
path = "{path}"
"""
REWEIGHT = """\
[reweight]
ensembles = ["{ensemble}"]
plot = false
[target]
mu2 = 0.12
[output]
path = "{path}"
"""


# ----------------------------------------------------------------------------- helpers
def launch(args, ranks=2, timeout=60, python=False):
    """`mpiexec -n ranks qftml args` (python=True: `... python args`), in its own process group,
    killed with it on timeout. Returns CompletedProcess (returncode 124 on timeout)."""
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable if python else QFTML, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code, err = 124, err + f"\nTIMEOUT after {timeout} s (a hang): {' '.join(cmd)}"
    finally:
        with _gone():
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, code, out, err)


class _gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is ProcessLookupError


def batch(tmp, cases, timeout=120):
    """Run the argv lists `cases` in one `mpiexec -n 2` launch; [{"codes", "err", "out"}] per case."""
    spec, result = os.path.join(tmp, "cases.json"), os.path.join(tmp, "result.json")
    with open(spec, "w") as f:
        json.dump([[str(a) for a in c] for c in cases], f)
    r = launch([os.path.join(HERE, "fault_batch.py"), spec, result], timeout=timeout, python=True)
    assert r.returncode == 0, f"the batch launch failed (exit {r.returncode}):\n{r.stderr[-3000:]}"
    os.remove(spec)
    with open(result) as f:
        out = json.load(f)
    os.remove(result)
    return out


def refused(result, *names, code=2):
    """Every rank exits `code`; one message (rank 0), no traceback, naming every one of `names`."""
    assert result["codes"] == [code, code], result
    err = result["err"][0]
    assert result["err"][1] == "" and err.count("error:") == 1 and "Traceback" not in err, result["err"]
    for name in names:
        assert name in err, (name, err)
    return err


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def snapshot(directory):
    """{relative path: sha256} of every file below directory: 'nothing written or damaged'."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def wait_for(predicate, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def readable_chain(path):
    """The file and its checkpoint are consistent after an abort: every record below n_records
    holds data, the checkpoint names a record count the file has (crash safety, docs/ensembles.md)."""
    from qftml.io.checkpoints import read_checkpoint_state

    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_records"])
        assert not bool(f.attrs.get("complete", False))
        assert f["observables/m"].shape[0] >= n
    state = read_checkpoint_state(path + ".ckpt")
    assert 0 <= state["n_records"] <= n and state["sweep_index"] >= 0
    return n


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A small finished ensemble (2 ranks) for plot and reweight."""
    d = tmp_path_factory.mktemp("ens")
    cfg = write(d / "ens.toml", SAMPLE.format(sweeps=40, ckpt=20, path=d / "ens.h5"))
    r = launch(["sample", cfg, "--quiet"])
    assert r.returncode == 0, r.stderr
    return str(d / "ens.h5")


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A finished one-epoch `qftml learn` run (output and checkpoint) on 2 ranks."""
    d = tmp_path_factory.mktemp("learned")
    cfg = write(d / "learn.toml", LEARN.format(path=d / "run.h5"))
    r = launch(["learn", cfg, "--quiet"])
    assert r.returncode == 0, r.stderr
    return d


# ----------------------------------------------------------------------------- hangs
def test_case01_config_that_is_a_directory_or_not_utf8_ends_every_rank_with_one_message(tmp_path):
    """Issue 12.1: rank 0 hit IsADirectoryError/UnicodeDecodeError outside on_root's catch, the other
    rank waited in bcast forever. Now: exit 2 on every rank, the file named, for every config command."""
    d = tmp_path / "d.toml"
    d.mkdir()
    b = tmp_path / "b.toml"
    b.write_bytes(b"\xff\xfe[lattice]\x00\x81")
    r = launch(["sample", d, "--quiet"], timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"config file {d} is a directory" in r.stderr
    cases = [[cmd, path, "--quiet"] for cmd in ("learn", "irg", "reweight", "bench") for path in (d, b)]
    for argv, res in zip(cases, batch(tmp_path, cases)):
        what = "is a directory" if argv[1] == d else "is not UTF-8 text"
        refused(res, f"config file {argv[1]} {what}")
    assert sorted(os.listdir(tmp_path)) == ["b.toml", "d.toml"] and not os.listdir(d)


def test_case02_learn_with_an_unusable_output_directory_or_a_nan_is_refused_before_writing(tmp_path):
    """Issue 12.2: a rank-0-only h5py.File(path, 'w') failed and the other rank hung (also reached
    with sampler.step = nan). Now: the outputs are checked (on rank 0, verdict shared) first."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = write(tmp_path / "learn.toml", LEARN.format(path=blocker / "sub" / "out.h5"))
    ok_cfg = write(tmp_path / "ok.toml", LEARN.format(path=tmp_path / "out" / "out.h5"))
    res = batch(tmp_path, [["learn", cfg, "--quiet"], ["learn", ok_cfg, "--quiet", "--set", "sampler.step=nan"]])
    refused(res[0], "output.path", f"{blocker} is not a directory")
    refused(res[1], "sampler.step = nan is not a finite number")
    assert sorted(os.listdir(tmp_path)) == ["file", "learn.toml", "ok.toml"]   # not even out/


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories: nothing to refuse")
def test_case02_learn_into_a_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cfg = write(tmp_path / "learn.toml", LEARN.format(path=ro / "out.h5"))
    try:
        res = batch(tmp_path, [["learn", cfg, "--quiet"]])
        refused(res[0], "output.path", "is not writable")
        assert not os.listdir(ro)
    finally:
        ro.chmod(0o755)


def test_case03_learn_resume_without_its_output_file_is_refused_on_every_rank(learned, tmp_path):
    """Issue 12.3: the ConfigError for a missing output file was raised on rank 0 only (hang)."""
    import shutil

    shutil.copy(learned / "run.h5.ckpt", tmp_path / "run.h5.ckpt")
    cfg = write(tmp_path / "learn.toml", LEARN.format(path=tmp_path / "run.h5"))
    before = snapshot(tmp_path)
    r = launch(["learn", cfg, "--quiet", "--resume"], timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1
    assert "--resume: no output file" in r.stderr and str(tmp_path / "run.h5") in r.stderr
    assert snapshot(tmp_path) == before


def _sample_run(tmp_path, sweeps=400000):
    cfg = write(tmp_path / "long.toml", SAMPLE.format(sweeps=sweeps, ckpt=200, path=tmp_path / "long.h5")
                .replace("[8, 8]", "[16, 16]"))
    cmd = [MPIEXEC, "-n", "2", QFTML, "sample", cfg, "--quiet"]
    return cfg, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                 start_new_session=True)


def _started(path):
    def ok():
        try:
            with h5py.File(path, "r") as f:
                return int(f.attrs["n_records"]) > 0
        except (OSError, KeyError):
            return False
    return ok


def _finish(proc, timeout=30):
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return 124, err + "\nTIMEOUT: the job did not end"
    finally:
        with _gone():
            os.killpg(proc.pid, signal.SIGKILL)


def test_case04_sigint_on_one_rank_during_sample_aborts_the_job_with_130(tmp_path):
    """Issue 12.4: KeyboardInterrupt on one rank was not turned into an abort (still running after
    90 s). Now: that rank waits QFTML_AGREE_TIMEOUT (2 s here) for the others, prints its message and
    MPI_Aborts with 130; the file stays a consistent, resumable chain."""
    cfg, proc = _sample_run(tmp_path)
    out = str(tmp_path / "long.h5")
    wait_for(_started(out), proc)
    os.kill(rank_pid(cfg, 1), signal.SIGINT)
    t0 = time.time()
    code, err = _finish(proc)
    assert code == 130, err
    assert time.time() - t0 < 20
    assert "qftml sample: interrupted on rank 1 of 2" in err
    readable_chain(out)


def test_case04_an_interrupt_raised_inside_a_finalizer_is_not_lost():
    """SIGINT while a finalizer runs (h5py's object cleanup, often on the mpio path) raised the
    KeyboardInterrupt inside it, where Python prints "Exception ignored" and drops it: the rank ran on
    and the job hung (`make test-site-mpi`, case 4 and 18). The failure policy delivers it again."""
    from mpi4py import MPI

    from qftml.collective import failure_policy

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt  # what SIGINT's handler does when it runs inside this finalizer

    # Python's own SIGINT handler, as in a run from a shell (a job started in the background of a
    # non-interactive shell inherits SIGINT ignored: then there is no KeyboardInterrupt to lose)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.time()
    try:
        with pytest.raises(KeyboardInterrupt):
            with failure_policy(MPI.COMM_SELF):
                Finalized()  # dropped at once: __del__ runs, Python ignores its exception
                while time.time() - t0 < 5:
                    time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.mark.mpi
def test_case18_files_of_a_section_every_rank_left_are_closed_before_the_exit(comm, tmp_path_factory):
    """An interrupt on every rank (Ctrl-C to the job) leaves the section with its HDF5 files open; at
    the interpreter's exit they were closed in any order after MPI_Finalize ("can't close file, there
    are objects still open" from h5py on the mpio path). Now the policy closes them on every rank."""
    import qftml
    from qftml.collective import failure_policy
    from qftml.io.ensembles import BlockFile, choose_write_path

    d = comm.bcast(str(tmp_path_factory.mktemp("int")) if comm.rank == 0 else None, root=0)
    path = os.path.join(d, "open.h5")
    open_files = lambda: {f.id for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) if f.valid}  # noqa: E731
    before = open_files()
    lat = qftml.Lattice((8, 4), comm=comm)
    with pytest.raises(KeyboardInterrupt):
        with failure_policy(comm):
            bf = BlockFile(path, "w", lat, choose_write_path(comm))
            bf.create("phi", tuple(lat.shape))
            bf.write_blocks("phi", (), np.full(tuple(lat.local_shape), 1.0 + comm.rank))
            raise KeyboardInterrupt
    assert open_files() == before
    comm.Barrier()
    with h5py.File(path, "r") as f:
        assert sorted(np.unique(f["phi"][:])) == [1.0 + r for r in range(comm.size)]
    comm.Barrier()


PATCHED_API = """\
import sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
what, cfg_path = sys.argv[1], sys.argv[2]

def boom(*args, **kwargs):
    raise RuntimeError("injected fault on rank 1")

if what == "learn":
    from qftml.learning import driver, Trainer
    if comm.rank == 1:
        Trainer.run_epoch = boom
    driver.run_learn(driver.load_learn_config(cfg_path, comm=comm), quiet=True, comm=comm)
elif what == "irg":
    from qftml.rg import pipeline
    if comm.rank == 1:
        pipeline._critical_stage = boom
    pipeline.run_irg(pipeline.load_irg_config(cfg_path, comm=comm), comm=comm, quiet=True, log=lambda m: None)
elif what == "reweight":
    from qftml.commands.reweight import load_reweight_config
    from qftml.reweighting import driver
    if comm.rank == 1:
        driver.compute_inputs = boom   # rank 0 waits in compute_inputs' collectives for rank 1
    driver.run(load_reweight_config(cfg_path, comm=comm), quiet=True, comm=comm)
print("returned normally", flush=True)
"""


@pytest.mark.parametrize("what", ["learn", "irg", "reweight"])
def test_case05_a_failure_on_one_rank_of_any_long_call_ends_the_whole_job(tmp_path, what, ensemble):
    """Issue 12.5: only `sample` aborted the job when one rank raised. Now run_learn, run_irg and
    reweighting.driver.run (the commands' Python API) run under collective.failure_policy: the
    failed rank's message, then MPI_Abort with exit code 1, within QFTML_AGREE_TIMEOUT."""
    text = {"learn": LEARN, "irg": IRG, "reweight": REWEIGHT}[what]
    cfg = write(tmp_path / f"{what}.toml", text.format(path=tmp_path / "out" / "o.h5", ensemble=ensemble))
    script = write(tmp_path / "patched.py", PATCHED_API)
    t0 = time.time()
    r = launch([script, what, cfg], timeout=60, python=True)
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "RuntimeError: injected fault on rank 1" in r.stderr and "on rank 1 of 2; aborting the job" in r.stderr
    assert "returned normally" not in r.stdout
    assert time.time() - t0 < 50


# ----------------------------------------------------------------------------- one message, exit 2
def test_case12_non_finite_numbers_are_refused_everywhere(tmp_path, ensemble):
    """Issue 12.12: nan/inf passed the bounds checks (sampler.step = nan: exit 2 on 1 rank, two
    tracebacks on 2; learn wrote out.h5 first; reweight.ess_min = nan accepted)."""
    s = write(tmp_path / "s.toml", SAMPLE.format(sweeps=20, ckpt=10, path=tmp_path / "s.h5"))
    learn = write(tmp_path / "l.toml", LEARN.format(path=tmp_path / "l.h5"))
    rw = write(tmp_path / "r.toml", REWEIGHT.format(ensemble=ensemble, path=tmp_path / "r.h5"))
    irg = write(tmp_path / "i.toml", IRG.format(path=tmp_path / "i.h5"))
    cases = [(["sample", s, "--set", "sampler.step=nan"], "sampler.step = nan"),
             (["sample", s, "--set", "action.kappa=inf"], "action.kappa = inf"),
             (["sample", s, "--set", "action.h=-inf"], "action.h = -inf"),
             (["learn", learn, "--set", "sampler.step=nan"], "sampler.step = nan"),
             (["learn", learn, "--set", "model.w_range=[0.3, nan]"], "model.w_range = nan"),
             (["learn", learn, "--set", "training.lr=inf"], "training.lr = inf"),
             (["reweight", rw, "--set", "reweight.ess_min=nan"], "reweight.ess_min = nan"),
             (["reweight", rw, "--set", "scan.values=[0.1, inf]"], "scan.values = inf"),
             (["irg", irg, "--set", "irg.zeta=nan"], "irg.zeta = nan"),
             (["bench", s, "--set", "action.mu2=nan"], "action.mu2 = nan")]
    before = snapshot(tmp_path)
    for (argv, key), res in zip(cases, batch(tmp_path, [a + ["--quiet"] for a, _ in cases])):
        refused(res, key, "is not a finite number")
    assert snapshot(tmp_path) == before
    r = subprocess.run([QFTML, "sample", s, "--quiet", "--set", "sampler.step=nan"], capture_output=True,
                       text=True, timeout=60, env=ENV)   # the same verdict on one rank
    assert r.returncode == 2 and "sampler.step = nan is not a finite number" in r.stderr


def test_case13_seeds_must_fit_the_engines_64_bits(tmp_path):
    """Issue 12.13: sampler.seed >= 2^64 ended in a pybind11 TypeError traceback."""
    s = write(tmp_path / "s.toml", SAMPLE.format(sweeps=4, ckpt=0, path=tmp_path / "s.h5"))
    learn = write(tmp_path / "l.toml", LEARN.format(path=tmp_path / "l.h5"))
    irg = write(tmp_path / "i.toml", IRG.format(path=tmp_path / "i.h5"))
    res = batch(tmp_path, [["sample", s, "--quiet", "--set", f"sampler.seed={2 ** 64}"],
                           ["learn", learn, "--quiet", "--set", f"model.seed={2 ** 70}"],
                           ["irg", irg, "--quiet", "--set", f"irg.seed={2 ** 64}"],
                           ["sample", s, "--quiet", "--set", f"lattice.shape=[8, {2 ** 63}]"],
                           ["sample", s, "--quiet", "--set", f"sampler.seed={2 ** 64 - 1}"]])
    refused(res[0], f"sampler.seed = {2 ** 64} is out of range")
    refused(res[1], f"model.seed = {2 ** 70} is out of range")
    refused(res[2], f"irg.seed = {2 ** 64} is out of range")
    refused(res[3], f"lattice.shape = {2 ** 63} is out of range")
    assert res[4]["codes"] == [0, 0], res[4]["err"]           # the largest seed runs
    with h5py.File(tmp_path / "s.h5") as f:
        assert int(f.attrs["seed"]) == 2 ** 64 - 1 and bool(f.attrs["complete"])


def test_case14_outputs_are_checked_before_the_work_starts(tmp_path, ensemble):
    """Issue 12.14: bench ran the whole benchmark and then failed on its output; plot --out on a
    file or read-only directory gave tracebacks. Now bench and plot check their outputs first."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bench = write(tmp_path / "b.toml", SAMPLE.format(sweeps=2, ckpt=0, path=blocker / "r.json")
                  + "[bench]\nrepeats = 1\nsweeps = 1\n")
    existing = tmp_path / "old.json"
    existing.write_text("{}")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "history.png").write_bytes(b"old")
    before = snapshot(tmp_path)
    res = batch(tmp_path, [["bench", bench], ["bench", bench, "--set", f"output.path='{existing}'"],
                           ["plot", ensemble, "--out", blocker, "--quiet"],
                           ["plot", ensemble, "--out", blocker / "sub", "--quiet"],
                           ["plot", ensemble, "--out", plots, "--quiet"]])
    refused(res[0], f"output.path = '{blocker / 'r.json'}'", f"{blocker} is not a directory")
    assert "site updates" not in res[0]["out"][0]             # refused before the benchmark
    refused(res[1], f"{existing} exists", "output.overwrite")
    refused(res[2], f"--out {blocker}: exists and is not a directory")
    refused(res[3], "--out", f"{blocker} is not a directory")
    refused(res[4], f"{plots / 'history.png'} exists", "--overwrite")
    assert snapshot(tmp_path) == before


def test_case16_messages_name_the_file_or_the_key(tmp_path, ensemble, learned):
    """Issue 12.16: library errors passed through by plot ('zero-size array ...', 'Samples have to
    have at least 5 entries.'), learn named action.couplings for a [target] key and printed whole
    tables for a refused resume."""
    import shutil

    with h5py.File(ensemble) as f:
        n = int(f.attrs["n_records"])
    learn = write(tmp_path / "l.toml", LEARN.format(path=tmp_path / "l.h5"))
    for name in ("run.h5", "run.h5.ckpt"):
        shutil.copy(learned / name, tmp_path / name)
    resume = write(tmp_path / "run.toml", LEARN.format(path=tmp_path / "run.h5"))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(bytes(range(128, 256)))
    before = snapshot(tmp_path)
    res = batch(tmp_path, [["plot", ensemble, "--therm", n, "--out", tmp_path / "p1"],
                           ["plot", ensemble, "--therm", n - 6, "--bin", 2, "--out", tmp_path / "p2"],
                           ["learn", learn, "--quiet", "--set", "target.couplings='missing.h5'"],
                           ["learn", resume, "--quiet", "--resume", "--set", "target.kappa=0.41"],
                           ["sample", binary]])
    refused(res[0], f"--therm {n} leaves no records of {ensemble}")
    refused(res[1], ensemble, "--therm", "--bin 2", "at least 5")
    err = refused(res[2], "target.couplings = 'missing.h5': no such file")
    assert "action.couplings" not in err
    err = refused(res[3], "target.kappa: checkpoint 0.4, config 0.41")
    assert len(err.strip().splitlines()) == 2, err             # the heading and the one key that differs
    refused(res[4], f"config file {binary} is not UTF-8 text")
    assert snapshot(tmp_path) == before


def test_case17_irg_validates_everything_before_it_writes_and_never_replaces_outputs(tmp_path, ensemble):
    """Issue 12.17: irg accepted sweeps = 101, every = 2; sampled two ensembles before failing on a
    missing action.couplings; created the output directory before validating the action; irg,
    learn and reweight silently replaced an existing output. One rule now: refuse unless
    output.overwrite = true."""
    irg = write(tmp_path / "i.toml", IRG.format(path=tmp_path / "new" / "i.h5"))
    (tmp_path / "old").mkdir()
    for name in ("i.h5", "l.h5", "r.h5"):
        (tmp_path / "old" / name).write_bytes(b"precious")
    old_irg = write(tmp_path / "oi.toml", IRG.format(path=tmp_path / "old" / "i.h5"))
    old_learn = write(tmp_path / "ol.toml", LEARN.format(path=tmp_path / "old" / "l.h5"))
    old_rw = write(tmp_path / "or.toml", REWEIGHT.format(ensemble=ensemble, path=tmp_path / "old" / "r.h5"))
    before = snapshot(tmp_path)
    res = batch(tmp_path, [["irg", irg, "--quiet", "--set", "sampler.sweeps=101"],
                           ["irg", irg, "--quiet", "--set", "action.couplings='missing.h5'"],
                           ["irg", irg, "--quiet", "--set", "action.lam=0.0", "--set", "action.mu2=-2.0"],
                           ["irg", irg, "--quiet", "--set", f"irg.ensemble='{tmp_path / 'none.h5'}'"],
                           ["irg", old_irg, "--quiet"], ["learn", old_learn, "--quiet"], ["reweight", old_rw]])
    refused(res[0], "sampler.sweeps = 101 must be a multiple of sampler.every = 2")
    refused(res[1], "action.couplings = 'missing.h5'")
    refused(res[2], "irg: [action]", "normalisable")
    refused(res[3], f"irg.ensemble = '{tmp_path / 'none.h5'}': no such file")
    for r, name in zip(res[4:], ("i.h5", "l.h5", "r.h5")):
        refused(r, f"{tmp_path / 'old' / name} exists", "output.overwrite = true")
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


def test_case18_ctrl_c_through_mpiexec_exits_130_not_2(tmp_path):
    """Issue 12.18: Ctrl-C through mpiexec exited 2 (hydra's code for a rank killed by SIGINT), the
    code of a bad configuration. Now every rank catches it: exit 130 and one message (README:
    Exit codes); the chain on disk stays consistent."""
    cfg, proc = _sample_run(tmp_path)
    out = str(tmp_path / "long.h5")
    wait_for(_started(out), proc)
    os.killpg(proc.pid, signal.SIGINT)        # what the terminal does: the whole foreground group
    code, err = _finish(proc)
    assert_exit_after_forwarded_signal(code, 130, err)  # mpiexec forwards it too (hydra < 4.1: 130 or 0)
    assert "qftml sample: interrupted" in err and "Traceback" not in err
    readable_chain(out)
