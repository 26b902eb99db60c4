"""`qftml slurm`: render and submit sbatch jobs from a qftml config (templates in slurm/).

Exports: HELP, add_arguments(parser), run(args) -> int

    qftml slurm templates                                   list the built-in templates
    qftml slurm render CONFIG.toml --template NAME [--set section.key=value ...] [job options]
                                                            print a ready sbatch script
    qftml slurm submit CONFIG.toml --template NAME [--after JOBID ...] [job options]
                                                            write the script under .qftml-jobs/,
                                                            sbatch --parsable it, print the job id
Two commands from a config to a chained sample -> analyze:
    jid=$(qftml slurm submit run.toml --template sample --ntasks 4 --time 02:00:00)
    qftml slurm submit run.toml --template analyze --after "$jid"
`--set` overrides go to the job's qftml command (and, e.g. output.path, to the paths the template
uses). Job options are Slurm's: --ntasks, --nodes, --time, --partition, --account, --mpi, ...
This command runs on the login node, not under MPI.
"""
from __future__ import annotations

import argparse
import sys

HELP = "render/submit Slurm batch jobs (templates for sample, analyze, learn, reweight, irg, sweeps)"


def _job_arguments(p: argparse.ArgumentParser, submit: bool):
    from qftml.cli import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--template", "-t", required=True,
                   help="template name (sample, analyze, learn, reweight, irg, sweep) or a path to a .sbatch file")
    g = p.add_argument_group("job options (Slurm)")
    g.add_argument("--job-name", help="default: <template>-<config stem>")
    g.add_argument("--nodes", "-N", type=int, default=1)
    g.add_argument("--ntasks", "-n", type=int, help="MPI ranks (default 2; analyze: 1)")
    g.add_argument("--cpus-per-task", "-c", type=int, default=1)
    g.add_argument("--time", default="01:00:00", help="time limit, HH:MM:SS or D-HH:MM (default 01:00:00)")
    g.add_argument("--partition", "-p")
    g.add_argument("--account", "-A")
    g.add_argument("--qos")
    g.add_argument("--mpi", default="pmi2",
                   help="srun --mpi plugin: pmi2 for MPICH (incl. the pip wheel), pmix for Open MPI (default pmi2)")
    g.add_argument("--launcher", choices=("srun", "mpirun"), default="srun",
                   help="start ranks with srun (default) or the mpiexec beside the python interpreter")
    g.add_argument("--overcommit", action="store_true", help="allow more tasks than CPUs")
    g.add_argument("--signal-seconds", type=int, default=None,
                   help="send USR1 this many seconds before the time limit so qftml checkpoints "
                        "(default 300 for sample and sweeps, 0 = off for other commands)")
    g.add_argument("--no-requeue", dest="requeue", action="store_false",
                   help="do not requeue the job after a checkpoint on a signal")
    g.add_argument("--log", help="sbatch --output pattern (default slurm-%%x-%%j.out in the working directory)")
    g.add_argument("--workdir", help="job working directory (default: the current directory)")
    g.add_argument("--python", help="python interpreter whose qftml the job runs (default: this one)")
    g.add_argument("--setup", default="", help="shell lines run before qftml, verbatim (e.g. 'module load mpich')")
    g.add_argument("--sbatch", action="append", default=[], metavar="DIRECTIVE",
                   help="extra #SBATCH directive, verbatim, e.g. --sbatch=--mem=4G (repeatable)")
    g.add_argument("--resume", action="store_true", help="always pass --resume (default: only when requeued)")
    g.add_argument("--sweep", metavar="SECTION.KEY=[V1, V2, ...]",
                   help="sweep template: one array task per value (output <stem>.taskNNN.h5)")
    g.add_argument("--command", dest="sweep_command", default=None,
                   help="command a sweep runs (default sample)")
    g.add_argument("--max-parallel", type=int, help="sweep: at most this many array tasks at once")
    g.add_argument("--ensemble", help="analyze: the ensemble file (default: the config's [output] path)")
    if submit:
        d = p.add_argument_group("dependencies")
        d.add_argument("--after", action="append", default=[], metavar="JOBID",
                       help="start only after this job (repeatable; see --dependency)")
        d.add_argument("--dependency", default="afterok",
                       choices=("afterok", "afterany", "afternotok", "aftercorr", "after"),
                       help="kind of dependency on --after jobs (default afterok)")
        d.add_argument("--script", help="where to write the rendered script (default .qftml-jobs/...)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="slurm_action", required=True, metavar="ACTION")
    sub.add_parser("templates", help="list the built-in templates")
    _job_arguments(sub.add_parser("render", help="print a ready sbatch script"), submit=False)
    _job_arguments(sub.add_parser("submit", help="render and submit with sbatch; prints the job id"), submit=True)


def _options(args):
    from qftml.slurm import JobOptions

    return JobOptions(job_name=args.job_name, nodes=args.nodes, ntasks=args.ntasks, cpus_per_task=args.cpus_per_task,
                      time=args.time, partition=args.partition, account=args.account, qos=args.qos, mpi=args.mpi,
                      launcher=args.launcher, overcommit=args.overcommit, signal_seconds=args.signal_seconds,
                      requeue=args.requeue, log=args.log, workdir=args.workdir, python=args.python,
                      setup=args.setup, sbatch=tuple(args.sbatch), resume=args.resume,
                      max_parallel=args.max_parallel)


def run(args) -> int:
    from qftml import slurm

    if args.slurm_action == "templates":
        for name in slurm.TEMPLATES:
            path = slurm.template_dir() / f"{name}.sbatch"
            first = path.read_text().splitlines()[1].lstrip("# ") if path.is_file() else "(missing)"
            print(f"{name:10s} {first}")
        return 0
    job = slurm.render(args.template, args.config, args.overrides, _options(args), sweep=args.sweep,
                       ensemble=args.ensemble, command=args.sweep_command)
    if job.command and slurm._command_accepts(job.command, "--help") is None:
        print(f"qftml slurm: warning: `qftml {job.command}` is not installed here; the job will fail "
              "unless the cluster's qftml has it", file=sys.stderr)
    if args.slurm_action == "render":
        sys.stdout.write(job.script)
        return 0
    try:
        submitted = slurm.submit(job, after=args.after, dependency=args.dependency, script_path=args.script)
    except slurm.SlurmError as e:
        print(f"qftml slurm submit: {e}", file=sys.stderr)
        return 1
    print(submitted.id)
    if not args.quiet:
        outs = ", ".join(submitted.outputs) or "-"
        print(f"qftml slurm: submitted {job.template} as job {submitted.id} (script {submitted.script}; "
              f"outputs {outs})", file=sys.stderr)
    return 0
