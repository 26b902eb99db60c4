"""The `qftml` command: `mpiexec -n N qftml <command> CONFIG.toml [--set section.key=value ...]`.

Each command lives in qftml.commands.<name> and provides
    HELP: str                          one line for `qftml --help`
    add_arguments(parser) -> None      its options (add_config_arguments: CONFIG.toml, --set, --quiet;
                                       add_ensemble_arguments: FILE.h5, --therm, --bin)
    run(args) -> int                   exit code; collective over MPI.COMM_WORLD
Every command runs under the failure policy of qftml.collective (failure_policy): an error every
rank raises prints one message on rank 0; an error on some ranks only ends the whole job with
MPI_Abort and that rank's message. Exit codes (EXIT_CODES, README "Exit codes"): 0 done; 1 an
unexpected failure (a bug, an I/O error while running: a traceback or one message); 2 bad configuration
or input (ConfigError, ValueError from the engine: one message naming the file or key, nothing written);
3 stopped by SIGTERM/SIGUSR1 after a checkpoint; 130 interrupted (SIGINT, Ctrl-C).

COMMANDS is the contract of command names (DESIGN 3); `qftml --help` lists only those whose module
exists in this version, and naming one that does not exist yet says so (exit 2).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMANDS = ("sample", "analyze", "plot", "learn", "fit", "network", "reweight", "irg", "bench", "slurm")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG.toml, repeatable --set section.key=value, and --quiet."""
    parser.add_argument("config", help="TOML configuration file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (batch jobs)")


def _count(least):
    def parse(text):
        n = int(text)
        if n < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {n}")
        return n
    return parse


def add_ensemble_arguments(parser: argparse.ArgumentParser, therm_help: str, bin_help: str) -> None:
    """FILE.h5, --therm N (>= 0) and --bin B (>= 1): the arguments of commands that read one ensemble."""
    parser.add_argument("file", help="HDF5 ensemble file written by `qftml sample`")
    parser.add_argument("--therm", type=_count(0), default=0, metavar="N", help=therm_help)
    parser.add_argument("--bin", type=_count(1), default=1, metavar="B", help=bin_help)


def _available_commands():
    """{name: module} of the COMMANDS this version has (a module that exists but fails to import
    is an error, not a missing command)."""
    return {name: importlib.import_module(f"qftml.commands.{name}") for name in COMMANDS
            if importlib.util.find_spec(f"qftml.commands.{name}") is not None}


def build_parser(available=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qftml", description="Lattice field theories as machine-learning models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in (available or _available_commands()).items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


EXIT_CODES = {0: "done", 1: "unexpected failure (traceback or one message)",
              2: "bad configuration or input (one message, nothing written)",
              3: "stopped by SIGTERM/SIGUSR1 after a checkpoint (continue with --resume)",
              130: "interrupted (SIGINT / Ctrl-C)"}


def _report(command, exc, rank) -> int:
    """The exit code of a failure every rank agreed on; its message once (rank 0)."""
    import traceback

    from qftml.collective import RemoteError, exit_code

    code = exit_code(exc)
    if rank == 0:
        if isinstance(exc, KeyboardInterrupt):
            print(f"qftml {command}: interrupted (exit code {code})", file=sys.stderr, flush=True)
        elif code == 2 or isinstance(exc, (OSError, RemoteError)):
            print(f"qftml {command}: error: {exc}", file=sys.stderr, flush=True)
        else:
            traceback.print_exception(exc)
            sys.stderr.flush()
    return code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    available = _available_commands()
    missing = argv[0] if argv and argv[0] in COMMANDS and argv[0] not in available else None
    if missing:
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank == 0:
            print(f"qftml: `{missing}` is a planned command that this version does not have yet", file=sys.stderr)
        return 2
    args = build_parser(available).parse_args(argv)
    from mpi4py import MPI

    from qftml import collective

    collective.PROGRAM[0] = f"qftml {args.command}"
    try:
        with collective.failure_policy(MPI.COMM_WORLD):
            code = args._run(args)
    except (Exception, KeyboardInterrupt) as e:  # every rank raised it (else the policy aborted the job)
        code = _report(args.command, e, MPI.COMM_WORLD.rank)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
