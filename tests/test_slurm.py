"""Slurm templates, quoting, submission and preemption (qftml.slurm, `qftml slurm`), on a REAL Slurm.

A session-scoped fixture starts a private one-node cluster on loopback (tests/slurm_cluster.py:
munged, slurmctld, slurmd from Debian's slurm-wlm/munge, as root); the cluster tests skip with the
reason when that is impossible (no packages, not root). Jobs run 2 MPI ranks under
`srun --mpi=pmi2` with the MPICH wheel's libmpi.

Two kinds of job:
  * the real commands (`qftml sample`, `analyze`, `learn`, `reweight`): valid HDF5/JSON outputs,
    preemption -> checkpoint -> requeue -> bit-identical result, chained sample -> analyze (the two
    commands of docs/cluster.md), sample -> reweight, the array sweep of examples/slurm_pipeline.py;
  * a recording stand-in for `qftml` (FAKE_QFTML below: an mpi4py program that records its argv,
    rank and COMM_WORLD size): every template, including those of commands not yet written,
    reaches `qftml <command>` with exactly the intended arguments on 2 ranks, and no shell
    metacharacter in a config value is ever executed.
Not mpi-marked: the jobs start their own MPI ranks; these tests run in the serial pass only.
Jobs and the cluster live in a private temporary directory (removed at the end; set
QFTML_SLURM_KEEP=1 to keep it with all job logs).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from qftml import slurm as qs
from qftml.config import ConfigError, parse_override

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from configs import learn_config  # noqa: E402
from slurm_cluster import SlurmCluster, unavailable_reason  # noqa: E402

BIN = os.path.dirname(sys.executable)
NASTY = "a $(touch pwned1) ; rm -rf nothing `touch pwned2` \"dq\" 'sq' #h & | > < \\ *"
FAKE_QFTML = """#!{python}
import json, os, sys, time
from mpi4py import MPI
comm = MPI.COMM_WORLD
rec = {{"argv": sys.argv[1:], "rank": comm.rank, "size": comm.size, "start": time.time(), "cwd": os.getcwd(),
       "job": os.environ.get("SLURM_JOB_ID"), "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
       "restart": os.environ.get("SLURM_RESTART_COUNT")}}
if str(comm.rank) == os.environ.get("FAKE_QFTML_FAIL_RANK"):
    os._exit(1)  # a crashed rank (no MPI_Finalize)
time.sleep(float(os.environ.get("FAKE_QFTML_SLEEP", "0")))
rec["end"] = time.time()
out = os.path.join(os.environ["FAKE_QFTML_RECORDS"], f"{{rec['job']}}-{{rec['task']}}-{{comm.rank}}.json")
with open(out, "w") as f:
    json.dump(rec, f)
if comm.rank == 0:
    print(json.dumps(rec))
"""


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def slurm_tmp_root():
    """A private directory for the cluster and the jobs. Not pytest's basetemp: pytest deletes all
    but the newest three basetemps when a session starts, which would pull the working directories
    from under running jobs whenever another pytest session starts on the same machine."""
    root = tempfile.mkdtemp(prefix="qftml-slurm-tests-")
    yield root
    if not os.environ.get("QFTML_SLURM_KEEP"):  # keep the logs for debugging
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tmp_path(request, slurm_tmp_root):
    """Per-test directory inside slurm_tmp_root (overrides pytest's tmp_path in this module)."""
    return Path(tempfile.mkdtemp(prefix=request.node.name[:60].replace("/", "_") + "-", dir=slurm_tmp_root))


@pytest.fixture(scope="session")
def cluster(slurm_tmp_root):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    c = SlurmCluster(os.path.join(slurm_tmp_root, "cluster"))
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()


@pytest.fixture
def fake_bin(tmp_path):
    """A bin directory whose `qftml` is the recording stand-in (python: this interpreter)."""
    d = tmp_path / "fakebin"
    d.mkdir()
    (d / "qftml").write_text(FAKE_QFTML.format(python=sys.executable))
    (d / "qftml").chmod(0o755)
    os.symlink(sys.executable, d / "python")
    for tool in ("mpiexec", "hydra_pmi_proxy"):  # the MPICH wheel's hydra (it starts the proxy beside itself)
        os.symlink(os.path.join(BIN, tool), d / tool)
    rec = tmp_path / "records"
    rec.mkdir()
    return d, rec


def records(rec_dir):
    out = [json.loads(p.read_text()) for p in sorted(rec_dir.glob("*.json"))]
    return sorted(out, key=lambda r: (str(r["task"]), r["rank"], r["start"]))


def write_config(path, output, sweeps=200, thermalize=50, shape=(8, 8), seed=7, checkpoint_every=100):
    path.write_text(f"""[lattice]
shape = {list(shape)}
[action]
kappa = 1.0
mu2 = -0.9515
lam = 0.7
[sampler]
sweeps = {sweeps}
thermalize = {thermalize}
seed = {seed}
checkpoint_every = {checkpoint_every}
[output]
path = {qs.toml_value(str(output))}
""")
    return path


def assert_no_injection(*roots):
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            hits = [n for n in dirnames + filenames if n.startswith("pwned")]
            assert not hits, f"shell injection: {hits} created in {dirpath}"


def sample_works():
    try:
        import qftml.commands.sample  # noqa: F401
        import qftml.commands.analyze  # noqa: F401
    except ImportError as e:
        return f"`qftml sample`/`qftml analyze` not available: {e}"
    return None


def opts(**kw):
    kw.setdefault("ntasks", 2)
    kw.setdefault("time", "00:05:00")
    kw.setdefault("signal_seconds", 60)
    return qs.JobOptions(**kw)


# -- quoting and rendering, no Slurm needed ----------------------------------------------------------
@pytest.mark.parametrize("value", [NASTY, "plain", "", "tab\\t and unicode \u00e9\u4e2d", 'x"y\'z', "$HOME"])
def test_set_words_round_trip_through_config_parser(value):
    section, key, back = parse_override(qs.set_word("output.path", value))
    assert (section, key, back) == ("output", "path", value)
    for v in (1, -0.9515, 1e-300, True, [16, 16], [[1, 2], [3]], ["a b", NASTY]):
        assert parse_override(qs.set_word("s.k", v))[2] == v


def test_control_characters_are_refused(tmp_path):
    cfg = write_config(tmp_path / "c.toml", "out.h5")
    with pytest.raises(ConfigError, match="control character"):
        qs.render("sample", cfg, ["output.path=\"x\\nrm -rf /\""], opts())
    with pytest.raises(ConfigError, match="control character"):
        qs.render("sample", cfg, [], opts(job_name="a\nb"))
    with pytest.raises(ConfigError):
        qs.render("sample", cfg, [], opts(time="1 hour"))
    # Slurm drops backslashes from --output paths: refused with advice instead of a lost log.
    with pytest.raises(ConfigError, match="backslash"):
        qs.render("sample", cfg, [], opts(workdir=str(tmp_path / "a\\b")))
    assert "#SBATCH --output=/x%%y/slurm-%x-%j.out" in qs.render("sample", cfg, [], opts(workdir="/x%y")).script


def test_directive_quote_follows_sbatch_rules():
    assert qs.directive_quote("debug") == "debug"
    assert qs.directive_quote("slurm-%x-%j.out") == "slurm-%x-%j.out"
    assert qs.directive_quote('a b"c\\d #e') == '"a b\\"c\\\\d #e"'


def test_time_limits_and_the_pre_limit_signal(tmp_path):
    assert [qs.time_limit_seconds(t) for t in ("5", "5:30", "02:00:00", "1-2", "1-02:30:15", "UNLIMITED")] == \
        [300, 330, 7200, 93600, 95415, None]
    cfg = write_config(tmp_path / "c.toml", "out.h5")
    def signal(**kw):
        return [line for line in qs.render("sample", cfg, [], qs.JobOptions(**kw)).script.splitlines()
                if line.startswith("#SBATCH --signal")]
    assert signal(time="02:00:00") == ["#SBATCH --signal=USR1@300"]
    assert signal(time="00:05:00") == ["#SBATCH --signal=USR1@30"]  # a tenth of a short limit
    assert signal(time="00:05:00", signal_seconds=0) == []
    with pytest.raises(ConfigError, match="not shorter than the time limit"):
        signal(time="5", signal_seconds=300)


def test_sweep_parsing():
    assert qs.parse_sweep("action.mu2=[-1.0, -0.9]") == ("action.mu2", [-1.0, -0.9])
    assert qs.parse_sweep("action.mu2=-1.0,-0.9,x") == ("action.mu2", [-1.0, -0.9, "x"])
    assert qs.parse_sweep("lattice.shape=[[8, 8], [16, 16]]") == ("lattice.shape", [[8, 8], [16, 16]])
    with pytest.raises(ConfigError):
        qs.parse_sweep("mu2=[1]")


@pytest.mark.parametrize("template", qs.TEMPLATES)
def test_every_template_renders_to_valid_bash(tmp_path, template):
    cfg = write_config(tmp_path / "c.toml", "out.h5")
    job = qs.render(template, cfg, ["action.mu2=-1.0"], opts(partition="p q", account="acc", overcommit=True),
                    sweep="action.mu2=[-1.0, -0.9]" if template == "sweep" else None)
    assert "{{" not in job.script and "}}" not in job.script
    subprocess.run(["bash", "-n"], input=job.script, text=True, check=True)
    assert '#SBATCH --partition="p q"' in job.script and "#SBATCH --account=acc" in job.script
    assert "#SBATCH --overcommit" in job.script and "#SBATCH --ntasks=" in job.script
    if template != "analyze":
        assert "#SBATCH --signal=USR1@60" in job.script and "#SBATCH --requeue" in job.script
    plain = qs.render(template, cfg, [], opts(), sweep="action.mu2=[-1.0]" if template == "sweep" else None)
    assert "--partition" not in plain.script and "--account" not in plain.script  # optional lines dropped


def test_cli_render_templates_and_errors(tmp_path, capsys):
    from qftml.cli import main

    cfg = write_config(tmp_path / "c.toml", "out.h5")
    assert main(["slurm", "render", str(cfg), "--template", "sample", "--ntasks", "4", "--partition", "gpu",
                 "--set", "sampler.seed=9", "--setup", "module load mpich"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!/bin/bash") and "#SBATCH --ntasks=4" in script and "#SBATCH --partition=gpu" in script
    assert "\nmodule load mpich\n" in script and "SET_ARGS=(--set sampler.seed=9)" in script
    assert main(["slurm", "templates"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(qs.TEMPLATES)
    assert main(["slurm", "render", str(cfg), "--template", "nosuch"]) == 2
    assert "qftml slurm: error: Slurm template 'nosuch' not found" in capsys.readouterr().err
    assert main(["slurm", "render", str(cfg), "--template", "sweep"]) == 2
    assert "needs a sweep" in capsys.readouterr().err


def test_rendered_script_passes_exact_arguments_without_slurm(tmp_path, fake_bin):
    """Run the rendered sample script with bash; `srun` is a stub that drops its options."""
    bindir, rec = fake_bin
    weird = tmp_path / NASTY
    weird.mkdir()
    cfg = write_config(weird / f"run {NASTY}.toml", f"{NASTY}.h5")
    override = f"output.path={qs.toml_value(str(weird / ('o ' + NASTY + '.h5')))}"
    job = qs.render("sample", cfg, [override], opts(python=str(bindir / "python"), workdir=str(weird),
                                                    log=str(tmp_path / "slurm-%j.out")))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (stubs / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "HYDRA_"))}
    env.update(PATH=f"{stubs}:{env['PATH']}", FAKE_QFTML_RECORDS=str(rec), SLURM_JOB_ID="1")
    script = job.write(tmp_path / "job.sh")
    r = subprocess.run(["bash", str(script)], cwd=weird, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (got,) = records(rec)
    assert got["argv"] == ["sample", str(cfg), "--quiet", "--set", override]
    assert parse_override(got["argv"][-1])[2] == str(weird / ("o " + NASTY + ".h5"))
    assert_no_injection(tmp_path, os.getcwd())


# -- on the real cluster ---------------------------------------------------------------------------
def test_srun_pmi2_gives_mpich_wheel_a_two_rank_world(cluster, tmp_path):
    prog = tmp_path / "size.py"
    prog.write_text("from mpi4py import MPI\nc = MPI.COMM_WORLD\nprint(c.rank, c.size)\n")
    r = cluster.run(["srun", "-n", "2", "--mpi=pmi2", sys.executable, str(prog)], timeout=60)
    assert sorted(r.stdout.split("\n")[:2]) == ["0 2", "1 2"], r.stdout + r.stderr


@pytest.mark.parametrize("template,launcher", [(t, "srun") for t in qs.TEMPLATES] + [("sample", "mpirun")])
def test_every_template_runs_two_ranks_under_srun(cluster, tmp_path, fake_bin, template, launcher):
    """Each template's job calls `qftml <command>` with its arguments on a 2-rank COMM_WORLD
    (srun --mpi=pmi2; and the MPICH wheel's mpiexec inside the allocation)."""
    bindir, rec = fake_bin
    cfg = write_config(tmp_path / "c.toml", "out.h5")
    sweep = "action.mu2=[-1.0, -0.9]" if template == "sweep" else None
    job = qs.render(template, cfg, ["sampler.seed=5"], opts(python=str(bindir / "python"), ntasks=2,
                                                           workdir=str(tmp_path), overcommit=True,
                                                           launcher=launcher), sweep=sweep)
    env = dict(cluster.env, FAKE_QFTML_RECORDS=str(rec))
    j = qs.submit(job, script_path=tmp_path / "job.sbatch", env=env)
    assert j.wait(timeout=90, poll=0.3) == "COMPLETED"
    got = records(rec)
    n_tasks = 2 if template == "sweep" else 1
    assert len(got) == 2 * n_tasks
    assert all(g["size"] == 2 for g in got) and sorted(g["rank"] for g in got) == sorted([0, 1] * n_tasks)
    command = "sample" if template == "sweep" else template
    if template == "analyze":
        assert got[0]["argv"] == ["analyze", str(tmp_path / "out.h5"), "--json"]
        assert json.loads((tmp_path / "out.analysis.json").read_text())["size"] == 2
    else:
        argv = got[0]["argv"]
        assert argv[:3] == [command, str(cfg), "--quiet"] and argv[3:5] == ["--set", "sampler.seed=5"]
    if template == "sweep":
        per_task = {g["task"]: g["argv"] for g in got if g["rank"] == 0}
        assert per_task["0"][5:] == ["--set", "action.mu2=-1.0", "--set", qs.set_word("output.path", j.outputs[0])]
        assert per_task["1"][5:] == ["--set", "action.mu2=-0.9", "--set", qs.set_word("output.path", j.outputs[1])]


def test_dependency_chain_runs_in_order_and_failure_stops_it(cluster, tmp_path, fake_bin):
    bindir, rec = fake_bin
    cfg = write_config(tmp_path / "c.toml", "out.h5")
    env = dict(cluster.env, FAKE_QFTML_RECORDS=str(rec), FAKE_QFTML_SLEEP="1.5")
    o = opts(python=str(bindir / "python"), ntasks=1, workdir=str(tmp_path), overcommit=True)
    first = qs.submit(qs.render("sample", cfg, [], o), script_path=tmp_path / "a.sbatch", env=env)
    second = qs.submit(qs.render("reweight", cfg, [], o), after=[first], script_path=tmp_path / "b.sbatch", env=env)
    third = qs.submit(qs.render("analyze", cfg, [], o), after=[second.id], script_path=tmp_path / "c.sbatch",
                      env=env)
    assert qs.wait([first, second, third], timeout=90, poll=0.3) == ["COMPLETED"] * 3
    by_job = {r["job"]: r for r in records(rec)}
    a, b, c = by_job[first.id], by_job[second.id], by_job[third.id]
    assert a["end"] <= b["start"] and b["end"] <= c["start"], (a, b, c)
    # A failing job: rank 1 dies at once while rank 0 would sleep 60 s; srun --kill-on-bad-exit ends
    # the job within seconds, its afterok dependant can never start, and wait() says so.
    bad = qs.render("sample", cfg, [], opts(python=str(bindir / "python"), ntasks=2, workdir=str(tmp_path),
                                           overcommit=True))
    failing = qs.submit(bad, script_path=tmp_path / "bad.sbatch",
                        env=dict(env, FAKE_QFTML_FAIL_RANK="1", FAKE_QFTML_SLEEP="60"))
    dependant = qs.submit(qs.render("analyze", cfg, [], o), after=[failing], script_path=tmp_path / "d.sbatch",
                          env=env)
    t0 = time.time()
    with pytest.raises(qs.JobFailed):
        failing.wait(timeout=50, poll=0.3)
    assert time.time() - t0 < 40
    with pytest.raises(qs.JobFailed, match="never start"):
        dependant.wait(timeout=60, poll=0.3)
    cluster.run(["scancel", dependant.id], check=False)


def test_waiting_for_an_unknown_job_raises_instead_of_hanging(cluster):
    with pytest.raises(qs.SlurmError, match="unknown"):
        qs.Job("987654", env=cluster.env).wait(timeout=30, poll=0.1)


def test_config_with_shell_metacharacters_runs_safely_under_sbatch(cluster, tmp_path):
    """The real `qftml sample` under sbatch, config/output paths full of metacharacters."""
    reason = sample_works()
    if reason:
        pytest.skip(reason)
    weird = tmp_path / NASTY
    weird.mkdir()
    cfg = write_config(weird / f"run {NASTY}.toml", f"ens {NASTY}.h5", sweeps=40, thermalize=10)
    out = weird / f"over {NASTY}.h5"
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    job = qs.render("sample", cfg, [qs.set_word("output.path", str(out))],
                    opts(workdir=str(weird), overcommit=True, log=str(logs_dir / "slurm-%x-%j.out")))
    j = qs.submit(job, script_path=tmp_path / "job.sbatch", env=cluster.env)
    assert j.outputs == [str(out)]
    try:
        j.wait(timeout=90, poll=0.3)
    finally:
        logs = "\n".join(p.read_text() for p in logs_dir.glob("slurm-*.out"))
    assert out.exists(), logs
    obs = qs.collect(j)
    assert len(obs["m"]) == 40 and np.all(np.isfinite(obs["m"]))
    assert_no_injection(tmp_path, cluster.base, os.getcwd())


def test_sample_then_analyze_chain(cluster, tmp_path):
    """Real commands, the two-command recipe of docs/cluster.md: sample (2 ranks) -> analyze."""
    reason = sample_works()
    if reason:
        pytest.skip(reason)
    from qftml.io.ensembles import read_attrs

    cfg = write_config(tmp_path / "run.toml", "ens.h5", sweeps=150, thermalize=50)
    env = dict(cluster.env)
    cli = [os.path.join(BIN, "qftml"), "slurm", "submit", str(cfg), "--time", "00:05:00", "--overcommit",
           "--quiet"]
    first = subprocess.run(cli + ["--template", "sample"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    second = subprocess.run(cli + ["--template", "analyze", "--after", first], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert first.isdigit() and second.isdigit()
    sample, analysis = qs.Job(first, [str(tmp_path / "ens.h5")], env=env), \
        qs.Job(second, [str(tmp_path / "ens.analysis.json")], env=env)
    try:
        qs.wait([sample, analysis], timeout=120, poll=0.5)
    finally:
        logs = "\n".join(p.name + ":\n" + p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert read_attrs(tmp_path / "ens.h5")["n_ranks"] == 2, logs
    obs, result = qs.collect(sample), qs.collect(analysis)
    assert len(obs["m2"]) == 150 and result["n_records"] == 150
    # The analysis job read the file the sample job wrote (no thermalisation cut, no binning).
    assert result["observables"]["m2"]["mean"] == pytest.approx(np.mean(obs["m2"]), rel=1e-12)
    rec = {r["JobId"]: r for r in qs._parse_scontrol(cluster.run(["scontrol", "-o", "show", "job"]).stdout)}
    assert rec[second]["StartTime"] >= rec[first]["EndTime"]


def test_example_pipeline_sweep_then_analyses(cluster, tmp_path):
    """examples/slurm_pipeline.py: array job (one ensemble file per task) -> analyses -> table."""
    reason = sample_works()
    if reason:
        pytest.skip(reason)
    from qftml.io.ensembles import read_attrs

    cfg = write_config(tmp_path / "run.toml", "ens.h5", sweeps=150, thermalize=50)
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                           "slurm_pipeline.py")
    r = subprocess.run([sys.executable, example, str(cfg), "--sweep", "action.mu2=[-1.2, -0.7]", "--time",
                        "00:05:00", "--overcommit", "--timeout", "150"], cwd=tmp_path, env=cluster.env,
                       capture_output=True, text=True, timeout=200)
    logs = "\n".join(p.name + ":\n" + p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert r.returncode == 0, r.stdout + r.stderr + logs
    outputs = [tmp_path / f"ens.task{i:03d}.h5" for i in range(2)]
    for path, mu2 in zip(outputs, (-1.2, -0.7)):
        a = read_attrs(path)
        assert a["action"]["mu2"] == mu2 and a["n_ranks"] == 2 and a["n_records"] == 150, (path, a["action"])
    rows = [line.split() for line in r.stdout.splitlines() if line.strip().startswith(("-1.2 ", "-0.7 "))]
    assert [row[0] for row in rows] == ["-1.2", "-0.7"] and all(len(row) == 10 for row in rows), r.stdout
    # deeper in the broken phase <|m|> is larger: by far more than 4 combined standard errors
    (m_a, e_a), (m_b, e_b) = [(float(row[1]), float(row[3])) for row in rows]
    assert m_a - m_b > 4 * (e_a ** 2 + e_b ** 2) ** 0.5, rows


LEARN_CONFIG = learn_config(dict(lr=0.05, epochs=4, samples=30, f_every=4, f_nodes=3, f_samples=20, f_thermalize=10,
                                 checkpoint_every=2), "learned.h5", tied=False)


def test_learn_and_reweight_templates_run_the_real_commands(cluster, tmp_path):
    """`learn` on 2 ranks; `sample` -> `reweight` chained on the ensemble; valid outputs."""
    try:
        import qftml.commands.learn  # noqa: F401
        import qftml.commands.reweight  # noqa: F401
    except ImportError as e:
        pytest.skip(f"`qftml learn`/`qftml reweight` not available: {e}")
    reason = sample_works()
    if reason:
        pytest.skip(reason)
    import h5py

    o = opts(workdir=str(tmp_path), overcommit=True)
    (tmp_path / "learn.toml").write_text(LEARN_CONFIG)
    learn = qs.submit(qs.render("learn", tmp_path / "learn.toml", [], o), script_path=tmp_path / "l.sbatch",
                      env=cluster.env)
    cfg = write_config(tmp_path / "run.toml", "ens.h5", sweeps=200, thermalize=50, shape=(4, 4))
    sample = qs.submit(qs.render("sample", cfg, [], o), script_path=tmp_path / "s.sbatch", env=cluster.env)
    (tmp_path / "rw.toml").write_text(f"""[reweight]
ensembles = [{qs.toml_value(str(tmp_path / "ens.h5"))}]
observables = ["phi2", "m2"]
[target]
da = 0.0
[scan]
key = "da"
values = [0.0, 0.01]
[output]
path = "rw.h5"
""")
    reweight = qs.submit(qs.render("reweight", tmp_path / "rw.toml", [], o), after=[sample],
                         script_path=tmp_path / "r.sbatch", env=cluster.env)
    try:
        qs.wait([learn, sample, reweight], timeout=150, poll=0.5)
    finally:
        logs = "\n".join(p.name + ":\n" + p.read_text()[-3000:] for p in tmp_path.glob("slurm-*.out"))
    with h5py.File(tmp_path / "learned.h5") as f:
        assert f["history/epoch"].shape == (4,), logs
        assert f["couplings/w"].shape == (8, 8, 2) and np.all(np.isfinite(f["couplings/a"][()]))
    res = json.loads((tmp_path / "rw.json").read_text())
    assert [p["params"]["da"] for p in res["points"]] == [0.0, 0.01], logs
    # at da = 0 the target is the sampled action: reweighting returns the plain ensemble mean
    obs = qs.collect(tmp_path / "ens.h5")
    phi2 = res["points"][0]["observables"]["phi2"]["value"]
    assert phi2 == pytest.approx(np.mean(obs["sum_phi2"]) / 16, rel=1e-9), logs


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_preempted_job_checkpoints_requeues_and_matches_uninterrupted_run(cluster, tmp_path):
    """USR1 (what --signal=USR1@N sends before the time limit) -> checkpoint, exit 3, requeue;
    the requeued job resumes and ends with the same configurations and observables, bit for bit,
    as the same config run without interruption."""
    reason = sample_works()
    if reason:
        pytest.skip(reason)
    from qftml.io.ensembles import read_attrs, read_configs

    sweeps = 1500
    runs = {}
    for name in ("interrupted", "reference"):
        d = tmp_path / name
        d.mkdir()
        # The first checkpoint (sweep 100) comes after thermalisation (20), so the signal that the
        # test sends once it exists stops the chain with records already written.
        cfg = write_config(d / "run.toml", "ens.h5", sweeps=sweeps, thermalize=20, shape=(8, 8),
                           checkpoint_every=100)
        job = qs.render("sample", cfg, [], opts(workdir=str(d), overcommit=True, signal_seconds=60))
        assert "#SBATCH --signal=USR1@60" in job.script and "#SBATCH --requeue" in job.script
        runs[name] = (d, qs.submit(job, script_path=d / "job.sbatch", env=cluster.env))
    d, job = runs["interrupted"]
    ckpt = d / "ens.h5.ckpt"
    _wait_for(ckpt.exists, 60, "the first checkpoint")
    cluster.run(["scancel", "--signal=USR1", job.id])  # to the job's steps, as --signal=USR1@N does

    def requeued():
        rec = job.records()[0]
        return rec.get("Restarts") == "1" and rec.get("JobState") == "PENDING"

    _wait_for(requeued, 60, "the job to requeue itself")
    stopped_at = read_attrs(d / "ens.h5")["n_records"]
    # The requeued job starts again by itself after the cluster's cred_expire (8 s here, 120 s by default).
    try:
        qs.wait([job, runs["reference"][1]], timeout=150, poll=0.5)
    finally:
        log = "\n".join(p.read_text() for p in d.glob("slurm-*.out"))
    assert 0 < stopped_at < sweeps, log  # it really was interrupted in the middle
    assert "requeueing job" in log and "restart 1" in log, log
    ref = runs["reference"][0] / "ens.h5"
    a, b = qs.collect(d / "ens.h5"), qs.collect(ref)
    assert set(a) == set(b) and len(a["m"]) == sweeps
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(read_configs(d / "ens.h5", sweeps - 5), read_configs(ref, sweeps - 5))
