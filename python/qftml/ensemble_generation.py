"""The `qftml sample` run: validate, thermalise, sweep, measure, write batches, checkpoint, resume.

Exports:
    SCHEMA                      config schema: [lattice] [action] [sampler] [output] (OUTPUT extended
                                by configs, overwrite, batch)
    EXIT_OK, EXIT_IO, EXIT_CONFIG, EXIT_PREEMPTED   0, 1 (a write failed mid-run, e.g. disk full: one
                                message; resume once fixed), 2, 3 ("checkpointed after SIGTERM/SIGUSR1: resume me")
    load_sample_config(path, overrides, comm) -> dict   validated config (ConfigError -> exit 2)
    build_action(cfg, lattice, section='action') -> Action   homogeneous, or from [section] couplings
    physics_description(cfg, action) -> dict             what must agree for --resume
    run_sample(cfg, resume=False, quiet=False, comm=None) -> exit code   (collective)
    StopFlag                     SIGTERM/SIGUSR1 -> finish the sweep, checkpoint, exit 3
    now_utc(), stamp(comm), log(comm, msg)   UTC timestamps (rank 0's on every rank), rank-0 log lines

The chain is fixed by the config alone: sweeps 1..T thermalise (Metropolis step tuned after every
sweep), then record j = 0..N-1 (N = sweeps / every) is measured after sweep T + (j+1) every.
Batches, checkpoints and interruptions never change it, and the counter-based RNG makes it
independent of the rank count, so (field, sweep_index, step) restarts it bit for bit.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import math
import os
import signal
import sys

import numpy as np

import qftml
from qftml.engine.observables import NonFiniteError
from qftml.engine.sampler import cluster_summary
from qftml.io.checkpoints import (CheckpointError, check_state, checkpoint_path, physics_differences, physics_hash,
                                  read_checkpoint, read_checkpoint_state, write_checkpoint)
from qftml.collective import abort_job, failure_policy, on_root
from qftml.progress import Progress
from qftml.config import (ACTION, LATTICE, OUTPUT, SAMPLER, ConfigError, Spec, check_cluster, check_outputs,
                          check_sweeps, load_config, output_problems)
from qftml.io.ensembles import (FORMAT_VERSION, EnsembleFileError, EnsembleWriter, choose_write_path, io_error_message,
                               is_io_failure, observable_layout, read_attrs, stack_observables)
from qftml.io.locking import hold_output, release_output

EXIT_OK, EXIT_IO, EXIT_CONFIG, EXIT_PREEMPTED = 0, 1, 2, 3
_THERM_CHUNK_MAX = 100  # thermalisation sweeps between stop-flag checks (at most)

SAMPLE_OUTPUT = dict(OUTPUT)
SAMPLE_OUTPUT.update({
    "configs": Spec("bool", True, help="store configurations in /configs (false: observables only)"),
    "batch": Spec("int", 0, min=0, help="records buffered per write (0: automatic, <= 16 MB per rank)"),
})
SCHEMA = {"lattice": LATTICE, "action": ACTION, "sampler": SAMPLER, "output": SAMPLE_OUTPUT}


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(comm) -> str:
    """Rank 0's time, on every rank (attributes written collectively must agree)."""
    return comm.bcast(now_utc(), root=0)


def log(comm, msg):
    """One timestamped line on rank 0 (stderr)."""
    if comm.rank == 0:
        print(f"{now_utc()} qftml sample: {msg}", file=sys.stderr, flush=True)


def load_sample_config(path, overrides=(), comm=None) -> dict:
    cfg = load_config(path, SCHEMA, overrides, comm)
    s = cfg["sampler"]
    check_sweeps(s)
    if not cfg["output"]["path"]:
        raise ConfigError("output.path is empty (give the HDF5 file to write)")
    if comm is not None:
        check_cluster(s, comm.size)
    return cfg


def build_action(cfg, lattice, section="action"):
    """The action of cfg[section] (the [action] of sample, the [target] of learn): homogeneous couplings,
    or the file named by `couplings`; ConfigError naming section.couplings for a bad file."""
    a = cfg[section]
    if a["couplings"]:
        from qftml.io.couplings import action_from_couplings

        if not os.path.exists(a["couplings"]):
            raise ConfigError(f"{section}.couplings = {a['couplings']!r}: no such file")
        try:
            return action_from_couplings(a["couplings"], lattice, field=a["field"])
        except EnsembleFileError as e:
            raise ConfigError(f"{section}.couplings = {a['couplings']!r}: {e}") from None
    return qftml.Action.homogeneous(lattice, kappa=a["kappa"], mu2=a["mu2"], lam=a["lam"], h=a["h"],
                                    field=a["field"], extra=a["extra"] or None, g=a["g"])


def physics_description(cfg, couplings_sha256=None) -> dict:
    """Everything that fixes the chain (a resume must agree on all of it); not sweeps or output path."""
    a, s = cfg["action"], cfg["sampler"]
    action = {"field": a["field"]}
    if a["couplings"]:
        action["couplings_sha256"] = couplings_sha256
    else:
        action.update({k: a[k] for k in ("kappa", "mu2", "lam", "h", "extra", "g")})
    sampler = {k: s[k] for k in ("algorithm", "hits", "seed", "step", "start", "thermalize", "every")}
    if s["cluster"] != "none":  # absent without clusters: checkpoints of earlier versions still resume
        sampler.update(cluster=s["cluster"], cluster_every=s["cluster_every"])
    return {
        "lattice": {"shape": list(cfg["lattice"]["shape"])},
        "action": action,
        "sampler": sampler,
        "output": {"configs": cfg["output"]["configs"]},
    }


class StopFlag:
    """SIGTERM / SIGUSR1 set a flag; `agreed()` (collective) tells every rank whether any rank got one."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, comm):
        self.comm, self.requested, self.signame, self._old = comm, False, None, {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handler(self, signum, frame):
        self.requested = True
        self.signame = signal.Signals(signum).name

    def agreed(self) -> bool:
        return bool(self.comm.allreduce(int(self.requested), op=_mpi_max()))


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def _on_root(comm, fn):
    """fn() on rank 0, result broadcast; an EnsembleFileError there is raised on every rank."""
    return on_root(comm, fn, EnsembleFileError)


_EXISTS_HINT = " (use --resume to continue its chain, or --set output.overwrite=true to replace it)"


def _output_problem(cfg, path, directory=None, resume=False):
    """Why the output path cannot be used (None if it can): config.output_problems, rank-local."""
    if resume:
        problems = output_problems([path], True, "output.path", path, require=[path])
    else:
        problems = output_problems([path], cfg["output"]["overwrite"], "output.path", path, hint=_EXISTS_HINT)
    return problems[0] if problems else None


def _check_output(cfg, resume, comm):
    """Rank 0 checks the output path (config.check_outputs, the rule of every command) before anything
    is written; all ranks agree. --resume needs the file; without it an existing file needs overwrite."""
    path = cfg["output"]["path"]
    if resume:
        check_outputs([path], True, comm, require=[path])
    else:
        check_outputs([path], cfg["output"]["overwrite"], comm, hint=_EXISTS_HINT)


def _auto_batch(cfg, lattice, n_records):
    b = cfg["output"]["batch"]
    if b == 0:
        per_record = 8 * lattice.local_volume if cfg["output"]["configs"] else 0
        b = 256 if per_record == 0 else max(1, min(64, (16 << 20) // per_record))
    return max(1, min(b, max(n_records, 1)))


def run_sample(cfg, resume=False, quiet=False, comm=None) -> int:
    """The whole `qftml sample` run (collective, under collective.failure_policy). Returns EXIT_OK or
    EXIT_PREEMPTED; configuration problems raise ConfigError/EnsembleFileError on every rank before
    anything is written; a failure on one rank ends the whole job (MPI_Abort) with its message."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    with failure_policy(comm):
        return _run_sample(cfg, resume, quiet, comm)


def _run_sample(cfg, resume, quiet, comm) -> int:
    lattice = qftml.Lattice(cfg["lattice"]["shape"], comm=comm, grid=cfg["lattice"]["grid"] or None)
    action = build_action(cfg, lattice)
    digest = None
    if cfg["action"]["couplings"]:
        from qftml.io.couplings import couplings_digest

        digest = _on_root(comm, lambda: couplings_digest(cfg["action"]["couplings"]))
    physics = physics_description(cfg, digest)
    _check_output(cfg, resume, comm)
    out_path = cfg["output"]["path"]
    directory = os.path.dirname(os.path.abspath(out_path))
    # one writer per output: the lock, then the output checks again under it (two runs started at once)
    lock = hold_output(out_path, comm, "qftml sample --resume" if resume else "qftml sample",
                       lambda: _output_problem(cfg, out_path, directory, resume))
    try:
        return _run_locked(cfg, resume, quiet, comm, lattice, action, physics, digest)
    finally:
        release_output(lock)


def _check_resume_state(path, state, s_cfg, N, out_path, old_attrs):
    """The checkpoint's counters, before anything is read or written: integers/finite numbers in
    range, the file's format able to continue them, and sweep_index and n_records consistent with
    the chain (thermalize, every)."""
    check_state(path, state, counts=("sweep_index", "n_records"), positive=("step",))
    check_state(path, state, counts=("acc_sweeps",) if "acc_sweeps" in state else (),
                finite=("acc_sum",) if "acc_sum" in state else ())
    _check_resumable_version(out_path, old_attrs, state)
    s, n, T, every = state["sweep_index"], state["n_records"], s_cfg["thermalize"], s_cfg["every"]
    if (s <= T and n != 0) or (s > T and ((s - T) % every or n != (s - T) // every)):
        raise CheckpointError(f"{path}: damaged or edited checkpoint: sweep_index = {s} and n_records = {n} "
                              f"disagree (thermalize = {T}, every = {every}: record j follows sweep "
                              f"thermalize + (j + 1) * every)")
    if n > N:
        raise ConfigError(f"cannot resume: the checkpoint holds {n} records but "
                          f"sampler.sweeps = {s_cfg['sweeps']} asks for only {N}")


def _run_locked(cfg, resume, quiet, comm, lattice, action, physics, digest):
    out_path = cfg["output"]["path"]
    ckpt_path = checkpoint_path(out_path)
    s_cfg = cfg["sampler"]
    N = s_cfg["sweeps"] // s_cfg["every"]

    # --- restore or start the chain (all checks before anything is written) ---
    state = block = old_attrs = None
    if resume:
        state = read_checkpoint_state(ckpt_path)
        diffs = physics_differences(state["physics"], physics)
        if diffs:
            raise ConfigError("cannot resume: the configuration's physics differs from the checkpoint's:\n  "
                              + "\n  ".join(diffs))
        old_attrs = _on_root(comm, lambda: read_attrs(out_path))
        _check_resume_state(ckpt_path, state, s_cfg, N, out_path, old_attrs)
        block, state = read_checkpoint(ckpt_path, lattice)
        if old_attrs.get("physics_hash") != state["physics_hash"]:
            raise ConfigError(f"cannot resume: {out_path} was written by a different chain than checkpoint {ckpt_path}")
    try:
        return _run_validated(cfg, resume, quiet, comm, lattice, action, physics, digest, state, block, old_attrs)
    except (OSError, RuntimeError) as e:
        if not is_io_failure(e):
            raise  # collective.failure_policy
        # a write failed (disk full, quota, I/O error) on this rank: one message, no traceback; the
        # file holds its first n_records records and the checkpoint its chain: --resume continues
        print(f"{now_utc()} qftml sample: error: {out_path}: writing failed on rank {comm.rank}: "
              f"{io_error_message(e)}. The file keeps its first n_records records and {ckpt_path} the chain "
              f"up to its last checkpoint: make room, then continue with --resume", file=sys.stderr, flush=True)
        if comm.size > 1:
            abort_job(EXIT_IO, comm)  # the other ranks wait in a collective for this one
        return EXIT_IO


def _close_quietly(writer):
    import gc
    import io

    saved = sys.stderr
    sys.stderr = io.StringIO()  # "Exception ignored in ... _dealloc" of a file that cannot be flushed
    try:
        with contextlib.suppress(Exception):
            writer.close()
        gc.collect()
    finally:
        sys.stderr = saved


def _check_resumable_version(out_path, old_attrs, state):
    """Files of format 1 continue as format 2: their RNG counters are the same below sweep 2^32
    (format 1 dropped the high 32 bits of the sweep index, so beyond it its streams repeated)."""
    version = int(old_attrs.get("format_version", 1))
    if version < 2 and int(state["sweep_index"]) >= 2 ** 32:
        raise ConfigError(f"cannot resume: {out_path} is of ensemble format {version}, whose random streams "
                          f"repeat after 2^32 sweeps, and its chain is at sweep {state['sweep_index']}; "
                          f"start a new chain")


def _run_validated(cfg, resume, quiet, comm, lattice, action, physics, digest, state, block, old_attrs):
    out_path = cfg["output"]["path"]
    ckpt_path = checkpoint_path(out_path)
    s_cfg = cfg["sampler"]
    T, every = s_cfg["thermalize"], s_cfg["every"]
    N = s_cfg["sweeps"] // every
    layout = observable_layout(lattice, action)
    store = cfg["output"]["configs"]
    batch = _auto_batch(cfg, lattice, N)
    write_path = choose_write_path(comm)
    check_cluster(s_cfg, comm.size)
    sampler = qftml.Sampler(action, seed=s_cfg["seed"], algorithm=s_cfg["algorithm"], hits=s_cfg["hits"],
                            step=s_cfg["step"], start="keep" if resume else s_cfg["start"],
                            cluster=s_cfg["cluster"], cluster_every=s_cfg["cluster_every"])
    if resume:
        _remove_temporaries(ckpt_path, comm)
        sampler.field.local = block  # setting the field refreshes its ghosts
        sampler.sweep_index = int(state["sweep_index"])
        sampler.step = float(state["step"])
        writer = EnsembleWriter.reopen(out_path, lattice, int(state["n_records"]), layout, store, write_path)
        runs = list(old_attrs.get("runs", []))
        start_time = old_attrs.get("start_time", stamp(comm))
        acc_sum, acc_sweeps = float(state.get("acc_sum", 0.0)), int(state.get("acc_sweeps", 0))
        cluster_counts = dict(state.get("cluster_counts", {}))
    else:
        _remove_temporaries(ckpt_path, comm, also=(ckpt_path,))
        start_time = stamp(comm)
        runs = []
        attrs = {
            "action": dict(cfg["action"], offsets=[list(o) for o in action.offsets], couplings_sha256=digest or ""),
            "lattice": {"shape": list(lattice.shape)}, "shape": np.array(lattice.shape, dtype=np.int64),
            "field": action.field_type, "volume": int(lattice.volume),
            "sampler": cfg["sampler"], "seed": s_cfg["seed"], "config": cfg, "physics": physics,
            "physics_hash": physics_hash(physics), "package_version": qftml.__version__,
            "start_time": start_time, "end_time": "",
        }
        from qftml.io.couplings import couplings_attrs

        writer = EnsembleWriter.create(out_path, lattice, attrs, layout, action.couplings(), store_configs=store,
                                       batch=batch, write_path=write_path, couplings_attrs=couplings_attrs(action))
        acc_sum, acc_sweeps = 0.0, 0
        cluster_counts = {}
    runs.append({"start": stamp(comm), "end": "", "n_ranks": comm.size, "process_grid": list(lattice.grid),
                 "write_path": write_path, "first_sweep": sampler.sweep_index, "first_record": writer.n_records,
                 "exit": "running"})
    # A resumed file takes this run's names (physics agreed up to renames, e.g. heatbath -> independence)
    # and format: format-1 files continue bit for bit (_check_resumable_version).
    writer.set_attrs(process_grid=np.array(lattice.grid, dtype=np.int64), n_ranks=comm.size,
                     write_path=write_path, runs=runs, sampler=cfg["sampler"], config=cfg, physics=physics,
                     physics_hash=physics_hash(physics), format_version=FORMAT_VERSION)
    updates = s_cfg["algorithm"] + (f" + {s_cfg['cluster']} every {s_cfg['cluster_every']}"
                                    if s_cfg["cluster"] != "none" else "")
    log(comm, f"{'resuming' if resume else 'starting'} {out_path}: lattice {list(lattice.shape)} on "
              f"{comm.size} rank(s), grid {list(lattice.grid)}, {action.field_type} field, "
              f"{updates}, sweep {sampler.sweep_index}, record {writer.n_records}/{N}, "
              f"write path {write_path}")

    with StopFlag(comm) as stop:
        try:
            code, acceptance = _chain(cfg, comm, lattice, action, sampler, writer, physics, ckpt_path, write_path,
                                      T, N, batch, stop, quiet, acc_sum, acc_sweeps, resume, cluster_counts)
        except (NonFiniteError, CheckpointError) as e:  # on every rank alike: the sums are global
            runs[-1].update(end=stamp(comm), last_sweep=sampler.sweep_index, last_record=writer.n_records,
                            exit="diverged")
            writer.set_attrs(runs=runs)
            writer.close()
            raise EnsembleFileError(f"{out_path}: sweep {sampler.sweep_index}: {e}. Nothing after record "
                                    f"{writer.n_records} was written; {ckpt_path} holds the last finite "
                                    f"state") from None
        except (OSError, RuntimeError) as e:
            # close what can be closed now (no h5py noise when the job ends); on mpio closing is collective
            # and the other ranks may be in another call: the job is aborted with the file as it is
            if is_io_failure(e) and write_path != "mpio":
                _close_quietly(writer)
            raise
    end = stamp(comm)
    runs[-1].update(end=end, last_sweep=sampler.sweep_index, last_record=writer.n_records,
                    exit="complete" if code == EXIT_OK else "preempted")
    # the tuned Metropolis step and the mean acceptance over the recorded sweeps so far
    final = {"runs": runs, "step": sampler.step, "acceptance": acceptance}
    if cluster_counts:  # over the recorded sweeps, like the acceptance
        final["cluster_stats"] = cluster_summary(cluster_counts)
    if code == EXIT_OK:
        final.update(complete=True, end_time=end)
    writer.set_attrs(**final)
    writer.close()
    if code == EXIT_PREEMPTED:
        log(comm, f"stopped by {stop.signame or 'a signal'} at sweep {sampler.sweep_index}, "
                  f"{writer.n_records}/{N} records; checkpoint {ckpt_path} written: continue with --resume "
                  f"(exit code {EXIT_PREEMPTED})")
    else:
        log(comm, f"done: {writer.n_records} records in {out_path}, checkpoint {ckpt_path}")
    return code


def _remove_temporaries(ckpt_path, comm, also=()):
    """Rank 0, under the writer lock (no other run owns them): temporary checkpoints left by killed runs."""
    if comm.rank == 0:
        for stale in [*also, ckpt_path + ".tmp", *glob.glob(glob.escape(ckpt_path) + ".*.tmp")]:
            if os.path.exists(stale):
                os.remove(stale)


def _add_cluster_counts(sampler, totals: dict) -> dict:
    """Add the sampler's cluster counts (before its counters are reset) to totals; the progress
    field of this batch ({} without a cluster update)."""
    counts = sampler.cluster_counts()
    if counts is None:
        return {}
    for key, v in counts.items():
        totals[key] = totals.get(key, 0) + v
    return {"cluster_size": f"{cluster_summary(counts)['mean_cluster_size']:.3g}"}


def _chain(cfg, comm, lattice, action, sampler, writer, physics, ckpt_path, write_path, T, N, batch, stop,
           quiet, acc_sum, acc_sweeps, resume, cluster_counts):
    """The chain; cluster_counts (summed counts of the recorded sweeps) is updated in place."""
    every, K = cfg["sampler"]["every"], cfg["sampler"]["checkpoint_every"]
    store = cfg["output"]["configs"]
    total = T + N * every
    s = sampler.sweep_index
    n_rec = writer.n_records
    if s >= T and n_rec != (s - T) // every:
        raise RuntimeError(f"checkpoint inconsistent: sweep {s} but {n_rec} records")
    # Stop-flag checks (one tiny allreduce) about every 2^20 local site updates: negligible cost,
    # and a signal is answered within a fraction of a second on any lattice.
    therm_chunk = max(1, min(_THERM_CHUNK_MAX, (1 << 20) // max(lattice.local_volume, 1)))
    check_records = max(1, min(batch, math.ceil((1 << 20) / (lattice.local_volume * every))))
    progress = Progress(total, "sample", unit="sweep", comm=comm, quiet=quiet, initial=s)
    last_ckpt = s

    def checkpoint():
        nonlocal last_ckpt
        write_checkpoint(ckpt_path, sampler.field, {
            "physics": physics, "sweep_index": sampler.sweep_index, "step": sampler.step,
            "n_records": writer.n_records, "phase": "thermalize" if sampler.sweep_index < T else "production",
            "acc_sum": acc_sum, "acc_sweeps": acc_sweeps, "cluster_counts": cluster_counts, "n_ranks": comm.size,
            "process_grid": list(lattice.grid), "time": stamp(comm), "package_version": qftml.__version__,
        }, write_path)
        last_ckpt = sampler.sweep_index
        progress.update(sampler.sweep_index, records=f"{writer.n_records}/{N}",
                        acceptance=f"{acc_sum / acc_sweeps:.3f}" if acc_sweeps else "-")

    try:
        if not resume:
            checkpoint()  # the chain's start: --resume works as soon as the file exists
        tune = cfg["sampler"]["algorithm"] == "metropolis"
        while s < T:
            nxt = min(T, s + therm_chunk)
            if K:
                nxt = min(nxt, (s // K + 1) * K)
            sampler.thermalize(nxt - s, tune=tune)
            s = nxt
            progress.update(s, phase="thermalize", step=f"{sampler.step:.3g}")
            stopping = stop.agreed()
            if (K and s % K == 0) or stopping:
                checkpoint()
            if stopping:
                return EXIT_PREEMPTED, (acc_sum / acc_sweeps if acc_sweeps else float("nan"))
        sampler.reset_counters()
        shape = tuple(lattice.local_shape)
        cfg_buf = np.empty((batch,) + shape) if store else None
        obs_buf = []
        since_check = 0
        while n_rec < N:
            sampler.sweep(every)
            s += every
            rec = qftml.measure(sampler.field, action)
            rec["sweep"] = s
            if store:
                cfg_buf[len(obs_buf)] = sampler.field.local
            obs_buf.append(rec)
            n_rec += 1
            since_check += 1
            ckpt_due = bool(K) and s // K > last_ckpt // K
            stopping = False
            if since_check >= check_records or n_rec == N or ckpt_due:
                since_check = 0
                stopping = stop.agreed()
            if len(obs_buf) == batch or n_rec == N or ckpt_due or stopping:
                k = len(obs_buf)
                writer.append(cfg_buf[:k] if store else None, stack_observables(obs_buf, writer.layout))
                obs_buf = []
                acc = sampler.acceptance()
                clusters = _add_cluster_counts(sampler, cluster_counts)
                sampler.reset_counters()
                acc_sum += acc * k * every
                acc_sweeps += k * every
                progress.update(s, phase="production", records=f"{n_rec}/{N}", acceptance=f"{acc:.3f}", **clusters)
            if ckpt_due or n_rec == N or stopping:
                checkpoint()
            if stopping:
                return EXIT_PREEMPTED, (acc_sum / acc_sweeps if acc_sweeps else float("nan"))
        if last_ckpt != s:
            checkpoint()
        return EXIT_OK, (acc_sum / acc_sweeps if acc_sweeps else float("nan"))
    finally:
        progress.close()
