"""The engine's API example runs as documented (docs/engine.md)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_engine_api_example_runs_on_two_ranks():
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = subprocess.run([mpiexec, "-n", "2", sys.executable, os.path.join(ROOT, "examples", "engine_api.py")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "identical to the 1-rank chain: True" in out.stdout


def test_bench_command_reports_throughput(tmp_path):
    import json

    qftml_bin = os.path.join(os.path.dirname(sys.executable), "qftml")
    out = subprocess.run([qftml_bin, "bench", os.path.join(ROOT, "examples", "bench.toml"), "--json",
                          "--set", "lattice.shape=[16, 16]", "--set", "bench.repeats=2", "--set", "bench.sweeps=2"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["site_updates_per_s"] > 0 and 0.2 < result["acceptance"] < 0.8
