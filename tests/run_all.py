"""The whole suite: serial pytest, then the MPI tests under mpiexec -n 2 and -n 4.

Every MPI run has a timeout (a failing rank cannot hang the suite) and is killed with its
process group afterwards, so no rank outlives the run. The last line is the combined count:
    qftml: P passed, F failed, S skipped      (--label replaces "qftml")
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def run(cmd, timeout):
    """Run cmd in its own process group; return (exit code, output). Kill the group at the end."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\nTIMEOUT after {timeout} s: {' '.join(cmd)}\n"
        code = 124
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leave no rank behind
        except ProcessLookupError:
            pass
    return code, out, time.time() - t0


def counts(text):
    found = {"passed": 0, "failed": 0, "skipped": 0}
    lines = [line for line in text.strip().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    if not lines:
        return found
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1]):
        found["failed" if what.startswith("error") else what] += int(n)
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--ranks", default="2,4", help="MPI sizes to run the mpi tests with")
    ap.add_argument("--label", default="qftml", help="the word before the summary line's counts")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    total = {"passed": 0, "failed": 0, "skipped": 0}
    env_ok = True
    runs = [("serial", [sys.executable, "-m", "pytest", "--with-mpi", "-q", "-rs", "-p", "no:cacheprovider",
                        *args.pytest_args])]
    for n in [int(x) for x in args.ranks.split(",") if x]:
        runs.append((f"mpi n={n}", [os.path.join(BIN, "mpiexec"), "-n", str(n), sys.executable,
                                    os.path.join(HERE, "mpi_pytest.py"), *args.pytest_args]))
    for name, cmd in runs:
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        code, out, seconds = run(cmd, args.timeout)
        c = counts(out)
        if code != 0 and c["failed"] == 0 and code != 5:
            c["failed"] = 1
        print(out.rstrip())
        print(f"== {name}: exit {code} in {seconds:.0f} s", flush=True)
        for k in total:
            total[k] += c[k]
        env_ok = env_ok and code in (0, 5)
    print(f"{args.label}: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped", flush=True)
    sys.exit(0 if env_ok and total["failed"] == 0 and total["passed"] > 0 else 1)


if __name__ == "__main__":
    main()
