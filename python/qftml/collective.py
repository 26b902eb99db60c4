"""Small collective patterns of the driver, and its one failure policy.

Exports:
    make_communicators(comm, replicas) -> Communicators(world, domain, cross, replica, replicas)
                                replica groups (independent chains) x domain groups (one lattice)
    on_root(comm, fn, errors)   fn() on rank 0 only, its result broadcast; an exception of a type in
                                `errors` raised there is raised again, same type and message, on every
                                rank (so all ranks agree on a verdict without all touching the file);
                                any other exception (also KeyboardInterrupt) is raised again on rank 0
                                and as RemoteError on the others: no rank is left waiting
    agree(comm, error) -> error or None   the first non-empty error message of any rank, on every rank
    raise_agreed(comm, error, kind=ConfigError)   agree(), then raise kind(message) on every rank
    failure_policy(comm)        context manager of the failure policy (below); every command and every
                                long collective call of the Python API runs inside one
    abort_job(code, comm=None)  flush this rank's output, let the launcher read it, MPI_Abort the whole job
    exit_code(exc) -> int       EXIT_CONFIG (2) for bad input, EXIT_INTERRUPT (130) for
                                KeyboardInterrupt, EXIT_ERROR (1) otherwise
    RemoteError                 raised on the ranks that did not fail when another rank's verdict is shared
    TAGS                        {user: base tag} of the driver's point-to-point messages; a user owns
                                the tags base .. base + 15 (the engine's own tags: cpp/comms/tags.hpp)

The failure policy. A collective call either agrees on a verdict before its collectives (on_root,
agree, raise_agreed: every rank raises the same error at the same point), or, if one rank raises
anyway (a bug, an I/O error, SIGINT on one rank, any BaseException), that rank waits at most
QFTML_AGREE_TIMEOUT seconds (default 5) for the others to fail too; if they do not (they are waiting in a
collective for it), it prints its message and calls MPI_Abort(MPI_COMM_WORLD, exit_code(exc)): the
whole job ends, with the message and the exit code. An exception every rank raised is re-raised on
every rank (the cli prints it once, on rank 0), after the HDF5 files opened inside the section and
still open are closed, on every rank in the same order (by name): left to the interpreter's exit they
would be closed in any order after MPI_Finalize (h5py's "can't close file, there are objects still
open" on the mpio driver). Inside the section a KeyboardInterrupt that Python drops because SIGINT
arrived while a finalizer ran (a __del__ or weakref callback, e.g. h5py's object cleanup: "Exception
ignored in ...") is delivered again at the next bytecode outside it, so an interrupt is never lost.
"""
from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass

from mpi4py import MPI

TAGS = {
    "ensemble_gather": 7300,  # qftml.io.ensembles: hyperslabs of the gathered write path sent to rank 0
    "halo_pad": 7310,       # qftml.rg.inverse.halo_pad: base + 2 mu (to +mu), base + 2 mu + 1 (to -mu)
}
EXIT_ERROR, EXIT_CONFIG, EXIT_INTERRUPT = 1, 2, 130
PROGRAM = ["qftml"]         # the cli sets ["qftml <command>"]: the prefix of abort messages
_AGREED = "_qftml_agreed_on"


class RemoteError(RuntimeError):
    """Another rank failed; `exit_code` is the code of that rank's failure."""

    def __init__(self, message, exit_code=EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _config_error():
    from qftml.config import ConfigError

    return ConfigError


def exit_code(exc: BaseException) -> int:
    """The process exit code of a failure: 2 bad input, 130 interrupt, 1 anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPT
    if isinstance(exc, RemoteError):
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if isinstance(exc, ValueError):   # ConfigError, EnsembleFileError, the engine's argument checks
        return EXIT_CONFIG
    return EXIT_ERROR


def _wait(request, timeout=None) -> bool:
    """Test `request` until it completes (True) or `timeout` seconds pass (False), sleeping in between:
    a rank waiting for another does not spin on a core the other may need."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 1e-4
    while not request.Test():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(2 * pause, 0.002)
    return True


def _mark(exc, comm):
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _AGREED, comm)
    return exc


def _agreed_on(exc, comm) -> bool:
    other = getattr(exc, _AGREED, None)
    if other is None:
        return False
    if other is comm:
        return True
    try:
        return MPI.Comm.Compare(other, comm) in (MPI.IDENT, MPI.CONGRUENT)
    except MPI.Exception:
        return False


def on_root(comm, fn, errors):
    if comm is None or comm.size == 1:
        return fn()
    result = failure = None
    if comm.rank == 0:
        try:
            result = ("ok", fn())
        except errors as e:
            result = ("error", (type(e), str(e)))
        except BaseException as e:  # noqa: BLE001 -- shared with every rank, then raised again here
            failure = e
            result = ("fatal", (f"{PROGRAM[0]}: rank 0 failed: {type(e).__name__}: {e}", exit_code(e)))
    _wait(comm.Ibarrier())  # rank 0 may take a while: the others sleep instead of spinning in bcast
    status, payload = comm.bcast(result, root=0)
    if failure is not None:
        raise _mark(failure, comm)
    if status == "error":
        kind, message = payload
        try:
            error = kind(message)
        except Exception:  # noqa: BLE001 -- a type that cannot be rebuilt from its message
            error = RemoteError(message, EXIT_CONFIG)
        raise _mark(error, comm)
    if status == "fatal":
        raise _mark(RemoteError(*payload), comm)
    return payload


def agree(comm, error):
    """Every rank passes its error message (or None); every rank gets the first one (by rank) or None."""
    if comm is None or comm.size == 1:
        return error
    _wait(comm.Ibarrier())
    return next((e for e in comm.allgather(error) if e), None)


def raise_agreed(comm, error, kind=None):
    """agree(), then raise kind(message) (default ConfigError) on every rank if any rank had an error."""
    message = agree(comm, error)
    if message:
        raise _mark((kind or _config_error())(message), comm)


def _abort(exc):
    """This rank's message, then MPI_Abort of the whole job with the failure's exit code."""
    code = exit_code(exc)
    world = MPI.COMM_WORLD
    where = f"rank {world.rank} of {world.size}"
    if isinstance(exc, KeyboardInterrupt):
        print(f"{PROGRAM[0]}: interrupted on {where}; aborting the job (exit code {code})", file=sys.stderr)
    elif code == EXIT_CONFIG or isinstance(exc, (RemoteError, OSError)):
        print(f"{PROGRAM[0]}: error on {where}: {exc}; aborting the job (exit code {code})", file=sys.stderr)
    else:
        traceback.print_exception(exc)
        print(f"{PROGRAM[0]}: {type(exc).__name__} on {where}; aborting the job (exit code {code})",
              file=sys.stderr)
    abort_job(code)


def abort_job(code: int, comm=None) -> None:
    """MPI_Abort(comm or MPI_COMM_WORLD, code) after this rank's output has left: flush, then wait a moment,
    because the launcher kills every rank at once and drops what it has not read yet (Debian's hydra
    4.0.2 lost the one message of a disk-full abort in 1 of 12 runs; tests/test_faults_files.py)."""
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.3)
    (comm or MPI.COMM_WORLD).Abort(code)


def _timeout() -> float:
    try:
        return float(os.environ.get("QFTML_AGREE_TIMEOUT", "5"))
    except ValueError:
        return 5.0


@contextlib.contextmanager
def _interrupts_delivered():
    """A KeyboardInterrupt raised inside a finalizer is reported to sys.unraisablehook and dropped:
    simulate SIGINT again, 20 ms later from a timer thread (at once, its handler would raise it inside
    this hook, where it is dropped too); the handler then raises it outside the finalizer."""
    import threading

    previous = sys.unraisablehook

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            timer = threading.Timer(0.02, _thread.interrupt_main, args=(signal.SIGINT,))
            timer.daemon = True
            timer.start()
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _open_h5_files() -> dict:
    """{hid: FileID} of the HDF5 files h5py has open in this process ({} if h5py is not imported)."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return {}
    return {f.id: f for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE) if f.valid}


def _close_files_opened_since(before: dict) -> None:
    """Close (with their open objects) the HDF5 files opened since `before`, sorted by name: every
    rank that has a file open closes it in the same order (collective on the mpio driver)."""
    import h5py

    new = [f for hid, f in _open_h5_files().items() if hid not in before]
    for fid in sorted(new, key=lambda f: f.name):
        with contextlib.suppress(Exception):
            h5py.File(fid).close()


@contextlib.contextmanager
def failure_policy(comm):
    """Run a collective section under the failure policy (module docstring). Collective on entry."""
    several = comm is not None and comm.size > 1
    guard = comm.Dup() if several else None  # the verdict's own communicator: no section collective matches it
    files = _open_h5_files()
    try:
        with _interrupts_delivered():
            yield
    except BaseException as exc:
        if several and not _agreed_on(exc, comm):
            if not _wait(guard.Ibarrier(), _timeout()):
                _abort(exc)
            _mark(exc, comm)
        _close_files_opened_since(files)  # every rank failed: all are here
        raise
    finally:
        if guard is not None:
            with contextlib.suppress(MPI.Exception):
                guard.Free()


@dataclass
class Communicators:
    world: MPI.Comm
    domain: MPI.Comm       # the ranks of this replica: one domain-decomposed lattice
    replica: int           # this rank's replica index
    replicas: int
    cross: MPI.Comm | None = None  # same lattice block in every replica (set once the lattice exists)

    def connect(self, lattice) -> None:
        """Create `cross` from the lattice's block ownership (Cartesian rank)."""
        if self.cross is None:
            self.cross = self.world.Split(color=lattice.rank, key=self.replica)


def make_communicators(comm: MPI.Comm, replicas: int = 1) -> Communicators:
    """Split `comm` into `replicas` consecutive groups of equal size (error if R does not divide it)."""
    if replicas < 1 or comm.size % replicas:
        raise ValueError(f"--replicas {replicas} must be >= 1 and divide the number of ranks ({comm.size})")
    per = comm.size // replicas
    replica = comm.rank // per
    domain = comm.Split(color=replica, key=comm.rank) if replicas > 1 else comm
    return Communicators(world=comm, domain=domain, replica=replica, replicas=replicas)
