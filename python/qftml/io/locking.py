"""One writer per output: an exclusive lock file "<output>.lock" that names its owner (host, pid).

Exports:
    LockError                          (an EnsembleFileError) the output is in use; the message is for the user
    lock_path(output_path)             "<output>.lock"
    WriterLock(output_path, command)   .acquire() / .release(), a context manager; rank-local
    hold_output(output_path, comm, command, check=None) -> WriterLock | None
                                       collective: rank 0 takes the lock, then runs check() (why the
                                       output cannot be used, or None) under it; every rank gets the
                                       same LockError/ConfigError. Release with .release() on rank 0
                                       (None elsewhere; release_output(lock) accepts either)
    release_output(lock)               release if held (any rank; a no-op for None)
    unique_temp_name(path)             "<path>.<host>-<pid>.tmp": the temporary file of this process

Why a lock file and not HDF5's own file locking: readers (`analyze`, plots) must be able to open a
running ensemble (HDF5 locking would refuse them, and SWMR does not exist for the mpio driver); HDF5
holds its lock only while a file is open, and the writers close and reopen files (checkpoints are
separate files, learn's history reopens per call), so it would not cover the whole run; and sites
often switch it off (HDF5_USE_FILE_LOCKING=FALSE) on parallel file systems where it fails.

Rules (docs/ensembles.md): the lock is flock(2) on "<output>.lock", held by rank 0 for the whole
run; the file holds a JSON line {host, pid, command, start} for messages. The kernel drops a flock
when its process dies, so a lock file left by a killed run is stale by construction and the next
run takes it over (stale-lock detection needs no guessing). Where flock is not supported (ENOLCK,
EOPNOTSUPP, ...), the lock is the exclusive creation (O_EXCL) of the file; then a leftover file is
stale if it names this host and a pid that no longer runs, and is refused otherwise (remove it by
hand once no run is alive). On Lustre mounted with `localflock`, flock is node-local: the lock then
refuses a second writer on the same node only.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

from qftml.io.ensembles import EnsembleFileError

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}


class LockError(EnsembleFileError):
    """The output is being written by another run (or its lock cannot be taken)."""


def lock_path(output_path) -> str:
    return os.fspath(output_path) + ".lock"


def unique_temp_name(path) -> str:
    return f"{os.fspath(path)}.{socket.gethostname()}-{os.getpid()}.tmp"


def _owner_text(text: str) -> str:
    try:
        o = json.loads(text)
        return f"{o['command']} (pid {o['pid']} on host {o['host']}, started {o['start']})"
    except (ValueError, KeyError, TypeError):
        return "another run (no owner recorded)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    def __init__(self, output_path, command="qftml"):
        self.output = os.fspath(output_path)
        self.path = lock_path(self.output)
        self.command = command
        self.fd = None

    def _record(self) -> bytes:
        return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n").encode()

    def _busy(self, text) -> LockError:
        return LockError(f"{self.output} is being written by {_owner_text(text)}: refusing a second writer "
                         f"(lock {self.path}; wait for that run to end, or write elsewhere)")

    def acquire(self) -> "WriterLock":
        for _ in range(20):  # retried only when a releasing owner unlinked the file under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise LockError(f"{self.output}: cannot create the lock file {self.path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise self._busy(text) from None
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_FLOCK:
                    return self._acquire_exclusive()
                raise LockError(f"{self.output}: cannot lock {self.path}: {e.strerror}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous owner removed the file between our open and our flock
                os.close(fd)
                continue
            # ours; a record left in it is stale (its process died, or the kernel would hold its flock)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._record(), 0)
            self.fd = fd
            return self
        raise LockError(f"{self.output}: could not take the lock {self.path} (it keeps being replaced)")

    def _acquire_exclusive(self) -> "WriterLock":
        """Without flock: O_EXCL creation; a leftover file of a dead process on this host is stale."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    with open(self.path) as f:
                        text = f.read(4096)
                except FileNotFoundError:
                    continue
                try:
                    owner = json.loads(text)
                    stale = owner["host"] == socket.gethostname() and not _pid_alive(int(owner["pid"]))
                except (ValueError, KeyError, TypeError):
                    stale = False
                if not stale:
                    raise LockError(str(self._busy(text)) + "; this file system has no flock: if no run is "
                                    f"alive, remove {self.path}") from None
                os.unlink(self.path)
                continue
            os.write(fd, self._record())
            self.fd = fd
            return self
        raise LockError(f"{self.output}: could not take the lock {self.path}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiter then sees another inode and retries
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def hold_output(output_path, comm, command="qftml", check=None):
    """Collective: rank 0 takes the writer lock of output_path, then runs check() under it (a str
    is the reason the output cannot be used). Every rank raises the same error, or rank 0 returns
    the held WriterLock (the others None)."""
    from qftml.config import ConfigError

    lock, error = None, None
    if comm is None or comm.rank == 0:
        try:
            lock = WriterLock(output_path, command).acquire()
            problem = check() if check is not None else None
            if problem:
                error = ("config", problem)
        except LockError as e:
            error = ("lock", str(e))
        if error and lock is not None:
            lock.release()
            lock = None
    if comm is not None and comm.size > 1:
        error = comm.bcast(error, root=0)
    if error:
        kind, msg = error
        raise (LockError if kind == "lock" else ConfigError)(msg)
    return lock


def release_output(lock) -> None:
    if lock is not None:
        lock.release()


__all__ = ["LockError", "lock_path", "WriterLock", "hold_output", "release_output", "unique_temp_name"]
