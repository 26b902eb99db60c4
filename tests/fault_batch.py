"""Run several `qftml` command lines in one MPI launch (for tests/test_faults_input.py).

Usage: mpiexec -n N python tests/fault_batch.py CASES.json RESULT.json
CASES.json is a list of argv lists (without the leading `qftml`). Each is run by qftml.cli.main on
every rank, one after another, with stdout/stderr captured per rank; rank 0 writes RESULT.json:
a list (one entry per case) of {"codes": [per rank], "err": [per rank], "out": [per rank]}.
A case that hangs or aborts the job ends the launch: the caller's timeout and exit status tell.
"""
import contextlib
import io
import json
import sys

from mpi4py import MPI


def run_case(argv):
    from qftml.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    return int(code), err.getvalue(), out.getvalue()


def main():
    comm = MPI.COMM_WORLD
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    results = []
    for argv in cases:
        code, err, out = run_case(argv)
        parts = comm.gather((code, err, out), root=0)
        if comm.rank == 0:
            results.append({k: [p[i] for p in parts] for i, k in enumerate(("codes", "err", "out"))})
        comm.Barrier()
    if comm.rank == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
