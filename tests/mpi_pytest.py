"""Run pytest on every rank of MPI.COMM_WORLD and print one summary line (rank 0).

Usage: mpiexec -n N python tests/mpi_pytest.py [pytest args]
Each rank's pytest output goes to build/test-logs/mpi-n<N>-run<pid>-rank<r>.log; the line printed is
    mpi n=N: P passed, F failed, S skipped
counted over ranks (a test counts as failed if it failed on any rank). On failure the log of
every failing rank is printed after the summary. Exit status: non-zero if any rank failed.
"""
import contextlib
import os
import sys

from mpi4py import MPI

import pytest


class Outcomes:
    def __init__(self):
        self.by_test = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            prev = self.by_test.get(report.nodeid, "passed")
            if prev != "failed":
                self.by_test[report.nodeid] = report.outcome


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    log_dir = os.path.join("build", "test-logs")
    os.makedirs(log_dir, exist_ok=True)
    run_tag = comm.bcast(os.getpid(), root=0)  # concurrent runs must not share log files
    log_name = "mpi-n{size}-run{tag}-rank{rank}.log"
    log_path = os.path.join(log_dir, log_name.format(size=size, tag=run_tag, rank=rank))
    outcomes = Outcomes()
    with open(log_path, "w", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = pytest.main(["--with-mpi", "-m", "mpi", "-p", "no:cacheprovider", "-q", *sys.argv[1:]],
                           plugins=[outcomes])
    merged = {}
    for part in comm.gather(outcomes.by_test, root=0) or []:
        for test, outcome in part.items():
            if merged.get(test) != "failed":
                merged[test] = outcome
    codes = comm.gather(int(code), root=0)
    if rank == 0:
        counts = {k: sum(1 for v in merged.values() if v == k) for k in ("passed", "failed", "skipped")}
        bad = [r for r, c in enumerate(codes) if c not in (0, 5)]
        if bad and counts["failed"] == 0:
            counts["failed"] = 1  # an error outside a test (collection, fixture) still fails
        if counts["failed"]:
            for r in bad:
                path = os.path.join(log_dir, log_name.format(size=size, tag=run_tag, rank=r))
                print(f"---- rank {r} log ({path}) ----")
                with open(path) as f:
                    print(f.read()[-20000:])
        print(f"mpi n={size}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped",
              flush=True)
        status = 1 if counts["failed"] else 0
    else:
        status = None
    sys.exit(comm.bcast(status, root=0))


if __name__ == "__main__":
    main()
