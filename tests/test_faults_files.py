"""Fault injection on files (issue 12, cases 6-11 and 15): concurrent writers, short datasets,
non-finite fields and sweep results, edited attributes, edited checkpoints, damaged ensembles,
truncated learn checkpoints, a full disk.

Every test asserts the exit code, that the one message names the file, and (sha256 of every file
before and after) that nothing was written or damaged. The `mpi` tests run the command in-process
on every rank of COMM_WORLD (cli.main: the same verdict and exit code on every rank; tests/run_all.py
runs them on 1, 2 and 4 ranks); the others start `mpiexec -n 2 qftml ...` subprocesses with timeouts
(separate processes are the point: two writers, a full file system).

The HDF5 write path follows qftml.io.ensembles.choose_write_path: set QFTML_WRITE_PATH=mpio (h5py
with MPI) or rank0-blocks to run every test on that path; the test names do not change.
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from launcher import MPIEXEC, QFTML, assert_exit_after_forwarded_signal
from configs import SAMPLE, learn_config




# ----------------------------------------------------------------------------- helpers
def cli(argv, comm=MPI.COMM_WORLD):
    """qftml.cli.main in-process on every rank: (exit code, rank 0's stderr), the same on every rank."""
    from qftml.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    text = comm.bcast(err.getvalue() if comm.rank == 0 else None, root=0)
    codes = comm.allgather(code)
    return max(codes), text


def shared_dir(comm, factory, name):
    path = str(factory.mktemp(name)) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def digests(directory, comm=MPI.COMM_WORLD):
    """{file name: sha256} of every file in directory (rank 0's view, on every rank)."""
    out = None
    if comm.rank == 0:
        out = {}
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return comm.bcast(out, root=0)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def on_rank0(fn, comm=MPI.COMM_WORLD):
    """fn() on rank 0 (an edit of a file), then every rank continues."""
    result = fn() if comm.rank == 0 else None
    return comm.bcast(result, root=0)


def assert_refused(code, text, names, before, directory):
    """Exit 2, one message naming every `names`, no traceback, every file as it was, no file added."""
    after = digests(directory)  # collective first: an assertion below fails on every rank alike
    assert code == 2, text
    assert text.count(": error:") == 1, text
    for name in names:
        assert name in text, (name, text)
    assert "Traceback" not in text, text
    assert after == before, "a refused run changed or added a file"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A complete 8x8 chain on every rank of COMM_WORLD: 10 records and its checkpoint."""
    comm = MPI.COMM_WORLD
    d = shared_dir(comm, tmp_path_factory, "base")
    out = os.path.join(d, "run.h5")
    on_rank0(lambda: _write(os.path.join(d, "run.toml"), SAMPLE.format(sweeps=20, ckpt=10, path=out)))
    code, text = cli(["sample", os.path.join(d, "run.toml"), "--quiet"])
    assert code == 0, text
    return d


def fresh(base, tmp_path_factory, name, sweeps=40):
    """A copy of the base chain in its own directory: (dir, config for `sweeps`, output, checkpoint)."""
    comm = MPI.COMM_WORLD
    d = shared_dir(comm, tmp_path_factory, name)
    out = os.path.join(d, "run.h5")

    def copy():
        for f in ("run.h5", "run.h5.ckpt"):
            shutil.copy(os.path.join(base, f), os.path.join(d, f))
        with open(os.path.join(d, "run.toml"), "w") as f:
            f.write(SAMPLE.format(sweeps=sweeps, ckpt=10, path=out))
    on_rank0(copy)
    return d, os.path.join(d, "run.toml"), out, out + ".ckpt"


def edit(path, fn):
    """fn(h5py.File) on rank 0, file opened r+ (the damage under test)."""
    def run():
        with h5py.File(path, "r+") as f:
            fn(f)
    on_rank0(run)


def resume(cfg):
    return cli(["sample", cfg, "--resume", "--quiet"])


def read_records(path):
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_records"])
        return n, {k: v[:n] for k, v in f["observables"].items()}, f["configs"][:n]


# ----------------------------------------------------------------------------- case 6: two writers
@pytest.mark.mpi
def test_case06_second_writer_and_resume_of_a_live_file_are_refused(base, tmp_path_factory):
    """While a writer holds the lock (here: this test's rank 0 holds it as a live run would), a
    new run with output.overwrite = true and a --resume are refused with one message naming the
    file and its owner; nothing is touched (at df196fb both went ahead: zeros in /configs)."""
    from qftml.io.locking import WriterLock, lock_path

    comm = MPI.COMM_WORLD
    d, cfg, out, ckpt = fresh(base, tmp_path_factory, "live")
    live = WriterLock(out, "a live test writer").acquire() if comm.rank == 0 else None
    try:
        before = digests(d)
        code, text = cli(["sample", cfg, "--quiet", "--set", "output.overwrite=true"])
        assert_refused(code, text, [out, "being written by a live test writer", lock_path(out)], before, d)
        code, text = resume(cfg)
        owner_pid = comm.bcast(os.getpid(), root=0)
        assert_refused(code, text, [out, "being written by", f"pid {owner_pid}"], before, d)
    finally:
        if live is not None:
            live.release()
    # released: a new writer takes the lock at once (a lock file left behind would be stale by
    # construction; that it is normally removed is not what this case is about)
    if comm.rank == 0:
        WriterLock(out, "the next writer").acquire().release()


@pytest.mark.mpi
def test_case06_stale_lock_and_temporaries_of_a_killed_run_are_taken_over(base, tmp_path_factory):
    """A lock file left by a killed run (no process holds its flock) and its temporary checkpoint
    do not block a resume: the lock is taken over, the temporary removed, the lock gone at the end."""
    from qftml.io.locking import lock_path, unique_temp_name

    d, cfg, out, ckpt = fresh(base, tmp_path_factory, "stale")
    dead = json.dumps({"host": "elsewhere", "pid": 999999, "command": "qftml sample", "start": "then"})

    def leftovers():
        with open(lock_path(out), "w") as f:
            f.write(dead + "\n")
        with open(ckpt + ".elsewhere-999999.tmp", "w") as f:
            f.write("half a checkpoint")
    on_rank0(leftovers)
    code, text = resume(cfg)
    assert code == 0, text
    assert sorted(os.listdir(d)) == ["run.h5", "run.h5.ckpt", "run.toml"]
    assert read_records(out)[0] == 20
    name = unique_temp_name(ckpt)  # a temporary name of this process alone
    assert name.startswith(ckpt + ".") and name.endswith(f"-{os.getpid()}.tmp")


def _mpiexec(args, **kw):
    return subprocess.Popen([MPIEXEC, "-n", "2", QFTML, "sample", *args, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timeout: {proc.args}\n{err}")
    return proc.returncode, err


def test_case06_concurrent_writers_in_separate_jobs(tmp_path):
    """Real separate jobs (mpiexec -n 2 each): while one run writes, a second writer
    (output.overwrite = true) and a --resume are refused; of two runs started at the same moment on
    a new path exactly one writes the file; the live run's file is intact (no zero rows)."""
    from qftml.io.locking import lock_path

    d = str(tmp_path)
    out = os.path.join(d, "live.h5")
    cfg = os.path.join(d, "live.toml")
    with open(cfg, "w") as f:  # long enough to be alive while the others start; stopped by SIGTERM
        f.write(SAMPLE.format(sweeps=2_000_000, ckpt=500, path=out))
    live = _mpiexec([cfg])
    try:
        t0 = time.time()
        while not (os.path.exists(out + ".ckpt") and os.path.exists(lock_path(out))):
            assert live.poll() is None and time.time() - t0 < 180, "the live run did not start"
            time.sleep(0.2)
        second = _mpiexec([cfg, "--set", "output.overwrite=true"])
        third = _mpiexec([cfg, "--resume"])
        for proc in (second, third):
            code, err = _finish(proc)
            assert code == 2 and out in err and "being written by qftml sample" in err, err
            assert err.count("error:") == 1 and "Traceback" not in err, err
        assert live.poll() is None, "the live run died"
    finally:
        if live.poll() is None:
            os.killpg(live.pid, signal.SIGTERM)
        code, err = _finish(live)
    assert_exit_after_forwarded_signal(code, 3, err)  # stopped by SIGTERM after a checkpoint (hydra < 4.1: 3 or 0)
    n, obs, configs = read_records(out)
    assert n > 0 and np.all(np.any(configs != 0, axis=(1, 2))) and np.all(np.diff(obs["sweep"]) == 2)
    assert not os.path.exists(lock_path(out))

    # two runs started at once on a new path: one writes, the other is refused (exists / being written)
    cfg2 = os.path.join(d, "pair.toml")
    with open(cfg2, "w") as f:
        f.write(SAMPLE.format(sweeps=20, ckpt=10, path=os.path.join(d, "pair.h5")))
    pair = [_mpiexec([cfg2]), _mpiexec([cfg2])]
    results = sorted(_finish(p) for p in pair)
    assert [c for c, _ in results] == [0, 2], results
    assert "pair.h5" in results[1][1] and "Traceback" not in results[1][1]
    assert read_records(os.path.join(d, "pair.h5"))[0] == 10


# ----------------------------------------------------------------------------- case 7: short datasets
@pytest.mark.mpi
def test_case07_resume_refuses_datasets_shorter_than_n_records(base, tmp_path_factory):
    """/observables/m cut to 5 of 10 rows: --resume is refused (at df196fb it zero-filled m[5:]),
    and readers refuse the file too."""
    from qftml.io.ensembles import EnsembleFileError, open_ensemble

    d, cfg, out, ckpt = fresh(base, tmp_path_factory, "short")
    edit(out, lambda f: f["observables/m"].resize(5, axis=0))
    before = digests(d)
    code, text = resume(cfg)
    assert_refused(code, text, [out, "/observables/m", "n_records = 10"], before, d)
    with pytest.raises(EnsembleFileError, match="/observables/m hold fewer rows"):
        open_ensemble(out)


# ----------------------------------------------------------------------------- case 8: non-finite
@pytest.mark.mpi
def test_case08_non_finite_checkpoint_field_and_sweep_results_are_refused(base, tmp_path_factory):
    """A NaN in the checkpoint field: --resume refused naming the checkpoint, nothing touched. A
    finite but absurd value (1e10: phi^4 beyond the fixed-point sums) passes the reader but its
    first measurement is refused on every rank: no record is made up (at df196fb both gave
    +-9.22e18 observables), the records on disk stay as they were."""
    comm = MPI.COMM_WORLD
    d, cfg, out, ckpt = fresh(base, tmp_path_factory, "nan")

    def poke(value):
        def f(h):
            field = h["field"][()]
            field[-1, -1] = value  # in the last rank's block
            h["field"][...] = field
        return f
    edit(ckpt, poke(np.nan))
    before = digests(d)
    code, text = resume(cfg)
    assert_refused(code, text, [ckpt, "non-finite"], before, d)

    n0, obs0, configs0 = on_rank0(lambda: read_records(out))
    edit(ckpt, poke(1e10))
    code, text = resume(cfg)
    assert code == 2 and out in text and "not finite" in text and "Traceback" not in text, text
    n, obs, configs = on_rank0(lambda: read_records(out))
    assert n == n0 == 10 and np.array_equal(configs, configs0)
    assert all(np.array_equal(obs[k], obs0[k]) for k in obs0)
    if comm.rank == 0:
        with h5py.File(out) as f:
            assert f["observables/m"].shape[0] == 10 and json.loads(f.attrs["runs"])[-1]["exit"] == "diverged"


@pytest.mark.mpi
def test_case08_engine_refuses_to_measure_a_non_finite_field():
    """measure() of a field with NaN, inf or 1e10 at one site (on the last rank) raises
    NonFiniteError on every rank; the same field without it measures as before."""
    import qftml
    from qftml.engine.lattice import Field
    from qftml.engine.observables import NonFiniteError

    comm = MPI.COMM_WORLD
    lat = qftml.Lattice([8, 8], comm=comm)
    action = qftml.Action.homogeneous(lat, kappa=0.3, mu2=0.1, lam=0.5)
    field = Field(lat)
    good = np.linspace(-1, 1, 64).reshape(8, 8)
    field.local = good[lat.local_slices]
    ref = qftml.measure(field, action)
    assert np.isclose(ref["sum_phi2"], (good ** 2).sum(), rtol=0, atol=1e-12)
    for bad in (np.nan, np.inf, -np.inf, 1e10):
        g = good.copy()
        g[-1, -1] = bad
        field.local = g[lat.local_slices]
        with pytest.raises(NonFiniteError, match="not finite"):
            qftml.measure(field, action)
    field.local = good[lat.local_slices]
    assert qftml.measure(field, action)["sum_phi2"] == ref["sum_phi2"]


# ----------------------------------------------------------------------------- case 9: edited attributes
EDITS_9 = {
    "shape": (lambda f: f.attrs.__setitem__("shape", np.array([32, 32])), "attribute shape = [32, 32]"),
    "lattice": (lambda f: f.attrs.__setitem__("lattice", json.dumps({"shape": [32, 32]})),
                "attribute lattice.shape = [32, 32]"),
    "volume": (lambda f: f.attrs.__setitem__("volume", 1024), "attribute volume = 1024"),
    "n_records_negative": (lambda f: f.attrs.__setitem__("n_records", -5), "n_records = -5"),
    "n_records_too_many": (lambda f: f.attrs.__setitem__("n_records", 11), "n_records = 11"),
    "format_version": (lambda f: f.attrs.__setitem__("format_version", 99), "format_version = 99"),
}


@pytest.mark.mpi
def test_case09_edited_attributes_are_checked_against_the_datasets(base, tmp_path_factory):
    """shape/lattice/volume that disagree with /configs, n_records out of range, an unknown
    format_version: `analyze` and `--resume` refuse with one message naming the file and the
    attribute (at df196fb: V = 1024, 5 records dropped, version 99 accepted). format_version 2
    (the next format) is read."""
    from qftml.io.ensembles import EnsembleFileError, open_ensemble

    for name, (change, words) in EDITS_9.items():
        d, cfg, out, ckpt = fresh(base, tmp_path_factory, f"attr_{name}")
        edit(out, change)
        before = digests(d)
        with pytest.raises(EnsembleFileError, match=words.replace("[", r"\[").replace("]", r"\]")):
            open_ensemble(out)
        code, text = cli(["analyze", out])  # rank 0 reads; code and text are the same on every rank
        assert code == 2 and out in text and words in text and "Traceback" not in text, (name, text)
        code, text = resume(cfg)
        assert_refused(code, text, [out, words], before, d)
    d, cfg, out, ckpt = fresh(base, tmp_path_factory, "attr_version2")
    edit(out, lambda f: f.attrs.__setitem__("format_version", 2))
    with open_ensemble(out) as ens:
        assert ens.n_records == 10 and ens.shape == (8, 8)


# ----------------------------------------------------------------------------- case 10: edited checkpoints
EDITS_10 = {
    "sweep_index_inconsistent": ("sweep_index", 31, "sweep_index = 31 and n_records = 10 disagree"),
    "sweep_index_text": ("sweep_index", "abc", "sweep_index = 'abc'"),
    "sweep_index_negative": ("sweep_index", -4, "sweep_index = -4"),
    "step_nan": ("step", np.nan, "step = nan"),
    "step_negative": ("step", -0.5, "step = -0.5"),
    "n_records_negative": ("n_records", -3, "n_records = -3"),
}


@pytest.mark.mpi
@pytest.mark.parametrize("case", sorted(EDITS_10))
def test_case10_edited_checkpoint_attributes_refused_before_the_file_is_touched(base, tmp_path_factory, case):
    """Edited checkpoint counters are refused with one message naming the checkpoint, exit 2,
    before the ensemble file is opened for writing (at df196fb: tracebacks, MPI_Abort, and a
    complete file rewritten to complete = False with a new `running` entry)."""
    key, value, words = EDITS_10[case]
    d, cfg, out, ckpt = fresh(base, tmp_path_factory, f"ckpt_{case}")
    edit(ckpt, lambda f: f.attrs.__setitem__(key, value))
    before = digests(d)
    code, text = resume(cfg)
    assert_refused(code, text, [ckpt, words], before, d)


# ----------------------------------------------------------------------------- case 11: damaged ensembles
def _contiguous(name):
    def f(h):
        data = h[name][()]
        del h[name]
        h.create_dataset(name, data=data)  # not chunked: cannot grow
    return f


EDITS_11 = {
    "contiguous_observable": (_contiguous("observables/m"), "/observables/m cannot grow"),
    "contiguous_configs": (_contiguous("configs"), "/configs cannot grow"),
    "n_records_text": (lambda f: f.attrs.__setitem__("n_records", "abc"), "n_records = 'abc' is not an integer"),
    "no_observables": (lambda f: f.__delitem__("observables"), "observables"),
}


@pytest.mark.mpi
def test_case11_damaged_ensemble_on_resume_one_message(base, tmp_path_factory):
    """Non-chunked datasets, a non-numeric n_records, a missing group: --resume exits 2 with one
    message naming the file (at df196fb: tracebacks), and nothing is changed."""
    for name, (change, words) in EDITS_11.items():
        d, cfg, out, ckpt = fresh(base, tmp_path_factory, f"damaged_{name}")
        edit(out, change)
        before = digests(d)
        code, text = resume(cfg)
        assert_refused(code, text, [out, words], before, d)


# ----------------------------------------------------------------------------- case 15: learn, disk full
def learn_text(epochs, path):
    return learn_config(dict(epochs=epochs, samples=6, f_nodes=2, f_samples=10, f_thermalize=2, checkpoint_every=1),
                        path, thermalize=5)


@pytest.mark.mpi
def test_case15_truncated_or_edited_learn_checkpoint_on_resume(tmp_path_factory):
    """A learn checkpoint cut to half its size, or with a NaN in a replica's field: `learn
    --resume` exits 2 with one message naming the checkpoint (at df196fb: OSError tracebacks on
    every rank); the output file is not touched."""
    comm = MPI.COMM_WORLD
    d = shared_dir(comm, tmp_path_factory, "learn")
    out = os.path.join(d, "learn.h5")
    cfg = os.path.join(d, "learn.toml")
    on_rank0(lambda: _write(cfg, learn_text(1, out)))
    code, text = cli(["learn", cfg, "--quiet"])
    assert code == 0, text
    on_rank0(lambda: _write(cfg, learn_text(2, out)))
    ckpt = out + ".ckpt"
    saved = on_rank0(lambda: open(ckpt, "rb").read())

    def truncate():
        with open(ckpt, "r+b") as f:
            f.truncate(len(saved) // 2)
    on_rank0(truncate)
    before = digests(d)
    code, text = cli(["learn", cfg, "--quiet", "--resume"])
    assert_refused(code, text, [ckpt], before, d)

    def nan_field():
        with open(ckpt, "wb") as f:
            f.write(saved)
        with h5py.File(ckpt, "r+") as f:
            f["fields"][0, 0, 0] = np.nan
    on_rank0(nan_field)
    before = digests(d)
    code, text = cli(["learn", cfg, "--quiet", "--resume"])
    assert_refused(code, text, [ckpt, "non-finite"], before, d)


def _can_mount_tmpfs():
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def test_case15_a_failed_mpi_io_call_is_an_io_failure_with_the_system_reason():
    """On the mpio path a full disk reaches h5py as MPI-IO's (ROMIO's) error text, without "errno =":
    it gave a traceback there (`make test-site-mpi`); it is the same one-line I/O failure (exit 1)."""
    from qftml.io.ensembles import io_error_message, is_io_failure

    e = RuntimeError("Unable to set dataset extent (MPI_File_write_at_all failed: MPI error string is 'Other "
                     "I/O error , error stack:\nADIOI_GEN_WRITECONTIG(80): Other I/O error No space left on device')")
    assert is_io_failure(e) and io_error_message(e) == "No space left on device (errno ENOSPC)"
    assert not is_io_failure(RuntimeError("Unable to create dataset (name already exists)"))


def test_case15_disk_full_one_message_then_resume_continues_the_chain(tmp_path):
    """A real full disk: the run writes into a 1 MB tmpfs (in a private mount namespace, gone
    after the run) until a write fails with ENOSPC. One message naming the file and "No space left
    on device", no traceback, exit 1; the files copied out resume on a normal disk (here on one
    rank, in-process) and give the same chain, bit for bit, as an undisturbed run (at df196fb: a
    traceback)."""
    if not _can_mount_tmpfs():
        pytest.skip("needs `unshare -m` and tmpfs mounts (root, or user namespaces) to make a small full disk")
    d = str(tmp_path)
    shape = "shape = [32, 32]"
    text = SAMPLE.replace("shape = [8, 8]", shape)
    for name in ("full", "ref"):
        with open(os.path.join(d, f"{name}.toml"), "w") as f:
            path = f"/mnt/{name}.h5" if name == "full" else os.path.join(d, "ref.h5")
            f.write(text.format(sweeps=240, ckpt=10, path=path) + "batch = 8\n")
    script = (f"mount -t tmpfs -o size=1m tmpfs /mnt && "
              f"{MPIEXEC} -n 2 {QFTML} sample {d}/full.toml --quiet; code=$?; cp -a /mnt/. {d}/; exit $code")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stderr
    assert "/mnt/full.h5" in r.stderr and "No space left on device" in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr, r.stderr
    with open(os.path.join(d, "full.toml")) as f:
        cfg = f.read().replace("/mnt/", d + "/")
    with open(os.path.join(d, "full.toml"), "w") as f:
        f.write(cfg)
    with h5py.File(os.path.join(d, "full.h5")) as f:
        assert 0 < int(f.attrs["n_records"]) < 120  # it did stop part way
    for args in ([f"{d}/full.toml", "--resume"], [f"{d}/ref.toml"]):  # in-process, 1 rank: the same chain
        code, err = cli(["sample", *args, "--quiet"])
        assert code == 0, err
    n, obs, configs = read_records(os.path.join(d, "full.h5"))
    n_ref, obs_ref, configs_ref = read_records(os.path.join(d, "ref.h5"))
    assert n == n_ref == 120 and np.array_equal(configs, configs_ref)
    assert all(np.array_equal(obs[k], obs_ref[k]) for k in obs_ref)
