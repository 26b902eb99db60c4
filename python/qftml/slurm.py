"""Slurm jobs for qftml: render sbatch templates safely, submit with dependency chains, wait, collect.

Exports:
    TEMPLATES                       names of the built-in templates (files slurm/<name>.sbatch)
    time_limit_seconds(text)        Slurm's --time in seconds (None: unlimited)
    template_dir() -> Path          where the built-in templates live ($QFTML_SLURM_TEMPLATES overrides)
    template_path(name) -> Path     a built-in name or a path to a template file
    JobOptions                      dataclass of the Slurm side of a job (ntasks, time, partition, mpi, ...)
    RenderedJob                     .script (text), .template, .outputs (files the job will write),
                                    .write(path)
    render(template, config, overrides=(), options=None, sweep=None, ensemble=None) -> RenderedJob
    submit(job, after=(), dependency="afterok", script_path=None, env=None) -> Job
    Job                             .id, .outputs, .state(), .states(), .wait(timeout), .collect()
    wait(jobs, timeout=None) -> list of final states     raises JobFailed if a job did not complete
    collect(job_or_path)            an ensemble's observables (dict of arrays) or an analysis (JSON)
    parse_sweep(text) -> (key, values)   "action.mu2=[-1.0, -0.9]" or "action.mu2=-1.0,-0.9"
    toml_value(v) -> str            a value as TOML, so `--set key=<it>` reads back exactly v
    directive_quote(s) -> str       a value for an `#SBATCH --opt=<it>` line (Slurm's own quoting)
    JobFailed, SlurmError

Template language (slurm/*.sbatch). A template is a bash script with placeholders:
    {{name}}     on an `#SBATCH` line: the value in Slurm's directive quoting; the whole line is
                 dropped when the value is None or "" (optional directives: partition, account...).
                 On any other line: the value shlex.quote'd; a list becomes space-separated quoted
                 words (for bash arrays: SET_ARGS=({{overrides}})).
    {{!name}}    inserted verbatim: only for text the submitting user typed on the command line
                 (`--setup`, `--sbatch`), never for a value read from a config file.
    {{>file}}    the named file from the template directory, rendered with the same values.
Every value that comes from a configuration (paths, overrides, names) therefore reaches the shell
exactly once, as a quoted literal assigned to a variable, and is used as "$VAR" afterwards: no
config value can inject a shell command. Values containing newlines or other control characters
are refused (they could end an `#SBATCH` line early).

Preemption (DESIGN: checkpoints make chains resumable on any rank count): templates ask Slurm for
`--signal=USR1@<seconds>` before the time limit and `--requeue`. `qftml sample` catches SIGUSR1 or
SIGTERM, finishes its sweep, writes the checkpoint and exits with PREEMPTED_EXIT_CODE; the
template then runs `scontrol requeue $SLURM_JOB_ID`, and the requeued job (SLURM_RESTART_COUNT > 0)
adds `--resume` when the checkpoint `<output>.ckpt` exists, continuing the chain bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from qftml.config import ConfigError, read_raw_config

TEMPLATES = ("sample", "analyze", "learn", "reweight", "irg", "sweep")
# Templates whose job runs one `qftml <command> CONFIG.toml`; analyze reads the ensemble instead.
CONFIG_COMMANDS = ("sample", "learn", "reweight", "irg")
DEFAULT_PREEMPTED_EXIT_CODE = 3  # qftml.ensemble_generation.EXIT_PREEMPTED ("checkpointed after a signal: resume me")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
_PLACEHOLDER = re.compile(r"\{\{([!>]?)([A-Za-z0-9_./-]+)\}\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIRECTIVE_SAFE = re.compile(r"^[A-Za-z0-9_.,:=@%/+-]+$")


class SlurmError(RuntimeError):
    """sbatch/squeue/scontrol failed; the message includes what Slurm said."""


class JobFailed(SlurmError):
    """A job ended in a state other than COMPLETED (or can never start)."""


# -- quoting ----------------------------------------------------------------------------------------
def _refuse_control(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ConfigError(f"{what} = {value!r} contains a newline or control character (refused: it "
                          "could end a line of the job script)")
    return value


def directive_quote(value) -> str:
    """`value` for an `#SBATCH --opt=VALUE` line. sbatch reads directive arguments itself (not via a
    shell): whitespace ends an argument unless inside double quotes, a backslash escapes the next
    character and an unquoted '#' starts a comment. Plain values are left as they are."""
    text = _refuse_control(str(value), "an #SBATCH value")
    if _DIRECTIVE_SAFE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_quote(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(shell_quote(v) for v in value)
    return shlex.quote(_refuse_control(str(value), "a job script value"))


def toml_value(v) -> str:
    """TOML text of v (str, bool, int, float, list): `--set key=<it>` parses back to exactly v."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else ("nan" if v != v else
                                                                                 ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot pass {v!r} ({type(v).__name__}) as a --set value")


def set_word(key: str, value) -> str:
    """One `--set` argument that reproduces `value` exactly (strings are TOML-quoted)."""
    return f"{key}={toml_value(value)}"


# -- templates --------------------------------------------------------------------------------------
def template_dir() -> Path:
    env = os.environ.get("QFTML_SLURM_TEMPLATES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    # An installed wheel may carry them as package data; the source tree / editable install has
    # <repo>/python/qftml/slurm.py -> <repo>/slurm.
    packaged = here / "slurm_templates"
    return packaged if packaged.is_dir() else here.parents[1] / "slurm"


def template_path(name: str) -> Path:
    if "/" in name or name.endswith(".sbatch"):
        p = Path(name)
    else:
        p = template_dir() / f"{name}.sbatch"
    if not p.is_file():
        raise ConfigError(f"Slurm template {name!r} not found ({p}); built-in templates: "
                          f"{', '.join(TEMPLATES)} in {template_dir()}")
    return p


def _fill(text: str, values: dict, base: Path, depth=0) -> str:
    if depth > 5:
        raise ConfigError("Slurm template includes nest too deeply")
    out = []
    for line in text.splitlines():
        names = _PLACEHOLDER.findall(line)
        if not names:
            out.append(line)
            continue
        if len(names) == 1 and names[0][0] == "!" and line.strip() == "{{!%s}}" % names[0][1] \
                and not values.get(names[0][1]):
            continue  # an empty verbatim block leaves no blank line
        directive = line.lstrip().startswith("#SBATCH")
        if directive and any(values.get(n) in (None, "", False) for kind, n in names if kind == ""):
            continue  # optional directive without a value

        def substitute(m):
            kind, name = m.group(1), m.group(2)
            if kind == ">":
                return _fill((base / name).read_text(), values, base, depth + 1).rstrip("\n")
            if name not in values:
                raise ConfigError(f"Slurm template uses {{{{{kind}{name}}}}} but no value is defined "
                                  f"(known: {', '.join(sorted(values))})")
            v = values[name]
            if kind == "!":
                return "" if v is None else str(v)
            if directive:
                return directive_quote(v)
            return shell_quote(v)

        out.append(_PLACEHOLDER.sub(substitute, line))
    return "\n".join(out) + "\n"


@dataclasses.dataclass
class JobOptions:
    """The Slurm side of a job. Strings are passed to sbatch in directive quoting."""
    job_name: str | None = None           # default: "<template>-<config stem>"
    nodes: int = 1
    ntasks: int | None = None             # default: 2, analyze: 1
    cpus_per_task: int = 1
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mpi: str = "pmi2"                     # srun --mpi: pmi2 (MPICH, incl. the pip wheel), pmix (Open MPI)
    launcher: str = "srun"                # srun, or mpirun (the mpiexec beside the python interpreter)
    overcommit: bool = False              # more tasks than CPUs (small test clusters)
    signal_seconds: int | None = None     # USR1 this long before the time limit (0: none); default
                                          # 300 for sample (it checkpoints on USR1), else 0
    requeue: bool = True
    log: str | None = None                # sbatch --output; default slurm-%x-%j.out (%A_%a for arrays)
    workdir: str | None = None            # --chdir; default: the current directory
    max_parallel: int | None = None       # array jobs: at most this many tasks at once (%N)
    python: str | None = None             # interpreter whose qftml runs; default: this one
    setup: str = ""                       # shell lines run before qftml (module load ...), verbatim
    sbatch: tuple = ()                    # extra `#SBATCH` directives, e.g. "--mem=4G", verbatim
    resume: bool = False                  # always pass --resume (default: only on a requeued job)

    def __post_init__(self):
        if self.launcher not in ("srun", "mpirun"):
            raise ConfigError(f"launcher = {self.launcher!r} is not allowed (allowed: 'srun', 'mpirun')")
        for name in ("nodes", "cpus_per_task"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.ntasks is not None and int(self.ntasks) < 1:
            raise ConfigError("ntasks must be >= 1")
        if not re.fullmatch(r"\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE",
                            str(self.time), flags=re.IGNORECASE):
            raise ConfigError(f"time = {self.time!r}: expected minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]] or UNLIMITED")


@dataclasses.dataclass
class RenderedJob:
    script: str
    template: str
    outputs: list                          # files the job writes (one per array task for sweeps)
    command: str | None = None
    sweep: tuple | None = None             # (key, values) for array jobs

    def write(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.script)
        path.chmod(0o755)
        return path


def _preempted_exit_code() -> int:
    try:
        from qftml.ensemble_generation import EXIT_PREEMPTED
    except ImportError:
        return DEFAULT_PREEMPTED_EXIT_CODE
    return int(EXIT_PREEMPTED)


def _command_accepts(command: str, option: str) -> bool | None:
    """Whether `qftml <command>` has `option`; None when the command is not installed (yet)."""
    import argparse
    import importlib

    try:
        module = importlib.import_module(f"qftml.commands.{command}")
    except ModuleNotFoundError:
        return None
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return any(option in a.option_strings for a in parser._actions)


def parse_sweep(text: str) -> tuple[str, list]:
    """'section.key=[v1, v2]' (TOML array) or 'section.key=v1,v2,...' -> (key, [values])."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--sweep {text!r}: expected section.key=[v1, v2, ...]")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        values = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        values = None
    if not isinstance(values, list):
        values = []
        for item in raw.split(","):
            try:
                values.append(tomllib.loads(f"v = {item.strip()}")["v"])
            except tomllib.TOMLDecodeError:
                values.append(item.strip())
    if not values:
        raise ConfigError(f"--sweep {text!r}: no values")
    return key, values


def _sweep_output(base: str, index: int) -> str:
    root, ext = os.path.splitext(base)
    return f"{root}.task{index:03d}{ext or '.h5'}"


def time_limit_seconds(text) -> int | None:
    """Slurm's --time in seconds (None for UNLIMITED): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    text = str(text).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0] * (2 - text.count(":"))
        h, m, s = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        h, m, s = ([0] + parts[:2] + [0])[:3] if len(parts) == 1 else \
            ((0, parts[0], parts[1]) if len(parts) == 2 else tuple(parts))
    return ((days * 24 + h) * 60 + m) * 60 + s


def _log_path(pattern: str, workdir: Path) -> str:
    """sbatch --output as an absolute path. Slurm expands %j, %x, ... in it ('%' of the working
    directory is escaped as '%%') and drops every backslash, so a backslash cannot be in it."""
    if os.path.isabs(pattern):
        path = pattern
    else:
        path = str(workdir).replace("%", "%%") + "/" + pattern
    if "\\" in path:
        raise ConfigError(f"job log path {path!r} contains a backslash, which Slurm removes from --output "
                          "paths: choose a log path without one (--log /some/dir/slurm-%j.out)")
    return path


def render(template: str, config, overrides=(), options: JobOptions | None = None, sweep=None,
           ensemble=None, command: str | None = None) -> RenderedJob:
    """Render a template for `config` (TOML path) with `--set` overrides.

    template: a name from TEMPLATES or a path. sweep: (key, values) or "key=[...]" for the array
    template (one task per value, output `<stem>.taskNNN.h5`); command: the qftml command the
    sweep runs (default sample). ensemble: the file `analyze` reads (default: the config's
    [output] path, i.e. what the matching `sample` job writes)."""
    options = options or JobOptions()
    name = Path(template).stem if ("/" in template or template.endswith(".sbatch")) else template
    path = template_path(template)
    config = Path(config).absolute()
    overrides = list(overrides)
    raw = read_raw_config(config, overrides)  # not validated here: the job's command does
    workdir = Path(options.workdir or os.getcwd()).absolute()
    out_rel = (raw.get("output") or {}).get("path")

    def absolute(p):
        return str(p if os.path.isabs(p) else workdir / p)

    output = absolute(out_rel) if isinstance(out_rel, str) and out_rel else None
    python = options.python or sys.executable
    bindir = os.path.dirname(python)
    ntasks = options.ntasks or (1 if name == "analyze" else 2)
    sampling = name == "sample" or (name == "sweep" and (command or "sample") == "sample")
    signal_seconds = options.signal_seconds
    limit = time_limit_seconds(options.time)
    if signal_seconds is None:
        # Only `qftml sample` catches USR1 (checkpoint, exit 3); for other commands the signal's
        # default action would just end the run early. Short jobs get a tenth of their limit.
        signal_seconds = (300 if limit is None else min(300, limit // 10)) if sampling else 0
    if signal_seconds < 0:
        raise ConfigError("signal_seconds must be >= 0")
    if limit is not None and signal_seconds and signal_seconds >= limit:
        raise ConfigError(f"signal_seconds = {signal_seconds} is not shorter than the time limit {options.time} "
                          f"({limit} s): the job would be signalled as soon as it starts")
    values = {
        "job_name": options.job_name or f"{name}-{config.stem}",
        "nodes": int(options.nodes), "ntasks": int(ntasks), "cpus_per_task": int(options.cpus_per_task),
        "time": str(options.time), "partition": options.partition, "account": options.account,
        "qos": options.qos, "workdir": str(workdir),
        "overcommit": "--overcommit" if options.overcommit else None,
        "signal": f"USR1@{int(signal_seconds)}" if signal_seconds else None,
        "requeue": "--requeue" if options.requeue else "--no-requeue",
        "qftml": os.path.join(bindir, "qftml"), "python": python, "mpiexec": os.path.join(bindir, "mpiexec"),
        "mpi": options.mpi, "launcher": options.launcher,
        "config": str(config), "output": output or "",
        "overrides": [w for o in overrides for w in ("--set", o)],
        "preempted_exit_code": _preempted_exit_code(),
        "always_resume": "yes" if options.resume else "",
        "setup": options.setup or "",
        "extra_directives": "\n".join(f"#SBATCH {_refuse_control(str(s), 'an --sbatch directive')}"
                                      for s in options.sbatch),
        "log": _log_path(options.log or "slurm-%x-%j.out", workdir),
    }
    outputs = [output] if output else []
    sweep_spec = None
    if name == "sweep" or sweep is not None:
        if sweep is None:
            raise ConfigError("the sweep template needs a sweep: --sweep section.key=[v1, v2, ...]")
        key, vals = parse_sweep(sweep) if isinstance(sweep, str) else (sweep[0], list(sweep[1]))
        if "." not in key:
            raise ConfigError(f"sweep key {key!r}: expected section.key")
        if not output:
            raise ConfigError(f"{config}: a sweep needs [output] path (each task writes <stem>.taskNNN.h5)")
        outputs = [_sweep_output(output, i) for i in range(len(vals))]
        sweep_spec = (key, vals)
        limit = f"%{int(options.max_parallel)}" if options.max_parallel else ""
        values.update({
            "array": f"0-{len(vals) - 1}{limit}",
            "sweep_key": key,
            "sweep_sets": [set_word(key, v) for v in vals],
            "sweep_outputs": outputs,
            "sweep_output_sets": [set_word("output.path", o) for o in outputs],
            "command": command or "sample",
            "log": _log_path(options.log or "slurm-%x-%A_%a.out", workdir),
        })
    command_name = values.get("command", name if name in CONFIG_COMMANDS else None)
    if command_name is not None:
        accepts_resume = _command_accepts(command_name, "--resume")
        values["resume_supported"] = "" if accepts_resume is False else "yes"
        accepts_quiet = _command_accepts(command_name, "--quiet")
        values["quiet"] = [] if accepts_quiet is False else ["--quiet"]
    if name == "analyze":
        target = ensemble or output
        if not target:
            raise ConfigError(f"{config}: analyze needs the ensemble path ([output] path or --ensemble)")
        target = absolute(target)
        values["ensemble"] = target
        values["analysis"] = os.path.splitext(target)[0] + ".analysis.json"
        outputs = [values["analysis"]]
    script = _fill(path.read_text(), values, path.parent)
    return RenderedJob(script=script, template=name, outputs=outputs, command=command_name, sweep=sweep_spec)


# -- submission and monitoring ----------------------------------------------------------------------
def _run(cmd, env=None, timeout=60) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: is this a Slurm login node (or is Slurm on PATH)?") from None
    if r.returncode != 0:
        raise SlurmError(f"{' '.join(map(shlex.quote, cmd))} failed ({r.returncode}): "
                         f"{(r.stderr or r.stdout).strip()}")
    return r.stdout


def dependency_string(after, kind="afterok") -> str | None:
    """'afterok:12:13' for after=[12, Job(13)]; None when there is nothing to wait for."""
    ids = [str(a.id if isinstance(a, Job) else a) for a in (after or ())]
    for i in ids:
        if not re.fullmatch(r"\d+(_\d+)?", i):
            raise ConfigError(f"--after {i!r}: not a Slurm job id")
    if kind not in ("afterok", "afterany", "afternotok", "aftercorr", "after"):
        raise ConfigError(f"dependency type {kind!r} is not allowed (afterok, afterany, afternotok, aftercorr, after)")
    return f"{kind}:{':'.join(ids)}" if ids else None


def submit(job: RenderedJob, after=(), dependency="afterok", script_path=None, env=None) -> "Job":
    """Write the script and `sbatch --parsable [--dependency=...]` it; returns the Job."""
    if script_path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        script_path = Path(".qftml-jobs") / f"{job.template}-{stamp}-{os.getpid()}-{time.monotonic_ns() % 10**6}.sbatch"
    path = job.write(script_path)
    cmd = ["sbatch", "--parsable"]
    dep = dependency_string(after, dependency)
    if dep:
        cmd.append(f"--dependency={dep}")
    cmd.append(str(path))
    out = _run(cmd, env=env).strip()
    job_id = out.split(";")[0]  # "--parsable": "id" or "id;cluster"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {out!r}, not a job id")
    return Job(job_id, outputs=list(job.outputs), template=job.template, env=env, script=path)


def _parse_scontrol(text: str) -> list[dict]:
    """`scontrol show job -o` output: one dict per job record (array tasks are separate records)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        rec = {}
        for m in re.finditer(r"(\w+)=(\S*)", line):
            rec.setdefault(m.group(1), m.group(2))
        records.append(rec)
    return records


class Job:
    """A submitted Slurm job (or job array)."""

    def __init__(self, job_id, outputs=(), template=None, env=None, script=None):
        self.id = str(job_id)
        self.outputs = list(outputs)
        self.template = template
        self.env = env
        self.script = script

    def __repr__(self):
        return f"Job({self.id}, template={self.template!r})"

    def records(self) -> list[dict]:
        """scontrol's view of the job (all array tasks); [] once Slurm has forgotten it."""
        try:
            return _parse_scontrol(_run(["scontrol", "-o", "show", "job", self.id], env=self.env))
        except SlurmError as e:
            if "Invalid job id" in str(e):
                return []
            raise

    def accounting_states(self) -> list[str]:
        """sacct's states (for jobs slurmctld has already forgotten); [] without accounting."""
        try:
            out = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", self.id], env=self.env)
        except SlurmError:
            return []
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def states(self) -> list[str]:
        return [r.get("JobState", "UNKNOWN") for r in self.records()]

    def state(self) -> str:
        """One word: PENDING/RUNNING/... or, for arrays, the least finished task's state."""
        states = self.states()
        if not states:
            return "UNKNOWN"
        for s in states:
            if s not in FINAL_STATES:
                return s
        bad = [s for s in states if s != "COMPLETED"]
        return bad[0] if bad else "COMPLETED"

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> str:
        """Block until every task has a final state; return it, raise JobFailed if not COMPLETED."""
        deadline = None if timeout is None else time.time() + timeout
        unknown = 0
        while True:
            records = self.records()
            states = [r.get("JobState", "UNKNOWN") for r in records]
            if not records:
                # slurmctld forgets finished jobs after MinJobAge (300 s by default): ask sacct.
                states = self.accounting_states()
                if states and all(s in FINAL_STATES for s in states):
                    bad = [s for s in states if s != "COMPLETED"]
                    if bad:
                        raise JobFailed(f"job {self.id} ended {bad[0]} (states {states}); see its log")
                    return "COMPLETED"
                unknown += 1
                if unknown >= 5:
                    raise SlurmError(f"job {self.id} is unknown to slurmctld and to sacct (finished long "
                                     "ago without accounting?); check its outputs directly")
            if records and all(s in FINAL_STATES for s in states):
                final = self.state()
                if final != "COMPLETED":
                    raise JobFailed(f"job {self.id} ended {final} (states {states}); see its log")
                return final
            never = [r for r in records if r.get("Reason") == "DependencyNeverSatisfied"]
            if never:
                raise JobFailed(f"job {self.id} can never start: a job it depends on failed")
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"job {self.id} still {states} after {timeout} s")
            time.sleep(poll)

    def collect(self):
        """The results: per output file, observables of an ensemble or the analysis JSON."""
        results = [collect(p) for p in self.outputs]
        return results[0] if len(results) == 1 else results


def wait(jobs, timeout: float | None = None, poll: float = 1.0) -> list[str]:
    """Wait for every job; raise JobFailed on the first one that did not complete."""
    deadline = None if timeout is None else time.time() + timeout
    return [j.wait(None if deadline is None else max(0.0, deadline - time.time()), poll) for j in jobs]


def collect(item):
    """A finished job's output: Job -> its collect(); '*.json' -> parsed JSON; an ensemble ->
    {observable: array} (plain h5py via qftml.io.ensembles)."""
    if isinstance(item, Job):
        return item.collect()
    path = str(item)
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    from qftml.io.ensembles import read_observables

    return read_observables(path)
