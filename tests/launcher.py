"""The mpiexec that the subprocess tests start (the one beside the interpreter) and what it guarantees.

    MPIEXEC, QFTML                        the paths of mpiexec and of the qftml script beside the interpreter
    hydra_version()                       (major, minor) if it is MPICH's hydra, else None
    forwarding_keeps_exit_codes()         False for hydra before MPICH 4.1 (below)
    assert_exit_after_forwarded_signal(code, expected, err)
                                          mpiexec's exit code after a signal that mpiexec forwarded
    rank_pid(marker, rank)                the pid of one rank of a running launch (to signal that rank only)

Hydra before MPICH 4.1 (e.g. Debian 12's mpich 4.0.2, the stack of `make test-site-mpi`) loses exit
codes after a signal it forwarded: mpiexec sends a SIGTERM/SIGUSR1/SIGINT it receives to its proxy,
which signals the ranks and sets its `forced_cleanup` flag; a rank that the proxy reaps after the last
rank's stdout/stderr closed then gets exit status 0 instead of its own. Which ranks that hits is a
race, so mpiexec exits with the rank's code or with 0 (measured with qftml sample on 2 ranks: 6 of 10
forwarded SIGTERMs gave mpiexec exit 0; with a wrapper recording each rank's code, all ranks exited 3
while mpiexec said 0 in 1 of 4; a SIGTERM sent to the ranks themselves gave 3 in 8 of 8). MPICH 4.1
removed the flag (pmodels/mpich pull request 5930, "hydra: remove forced_cleanup in proxy"); the pip
wheel's hydra (5.x) passes the code on. README "Exit codes" says this to users.
"""
import functools
import os
import re
import subprocess
import sys
import time

MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
QFTML = os.path.join(os.path.dirname(sys.executable), "qftml")


@functools.lru_cache(maxsize=None)
def hydra_version():
    try:
        out = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"HYDRA build details:\s*Version:\s*(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else None


def forwarding_keeps_exit_codes() -> bool:
    v = hydra_version()
    return v is None or v >= (4, 1)


def assert_exit_after_forwarded_signal(code, expected, err):
    """A signal went to mpiexec, which forwarded it to the ranks: mpiexec exits with `expected`; on
    hydra < 4.1 it may exit 0 instead (module docstring), and then the ranks' one message must still
    state `expected` (qftml prints "(exit code N)" on rank 0 for every signal it handles)."""
    if code == expected:
        return
    assert code == 0 and not forwarding_keeps_exit_codes(), (code, err)
    assert f"exit code {expected})" in err, err


def rank_pid(marker, rank, timeout=30):
    """The pid of MPI rank `rank` of the launch whose command line contains `marker`."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if marker in cmdline and "mpiexec" not in cmdline and f"PMI_RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} of {marker} found")
