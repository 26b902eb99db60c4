"""The `qftml` command: `mpiexec -n N qftml <command> CONFIG.toml [--set section.key=value ...]`.

Each command lives in qftml.commands.<name> and provides
    HELP: str                          one line for `qftml --help`
    add_arguments(parser) -> None      its options (use add_config_arguments for the usual ones)
    run(args) -> int                   exit code; collective over MPI.COMM_WORLD
Errors for the user (ConfigError, ValueError from the engine) print one message on rank 0 and exit
with status 2 on every rank; nothing is written before the configuration is validated.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("sample", "analyze", "plot", "learn", "fit", "network", "reweight", "irg", "bench", "slurm")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG.toml, repeatable --set section.key=value, and --quiet."""
    parser.add_argument("config", help="TOML configuration file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (batch jobs)")


def _available_commands():
    found = {}
    for name in COMMANDS:
        try:
            found[name] = importlib.import_module(f"qftml.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"qftml.commands.{name}":
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qftml", description="Lattice field theories as machine-learning models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    from qftml.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        code = args._run(args)
    except (ConfigError, ValueError) as e:
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank == 0:
            print(f"qftml {args.command}: error: {e}", file=sys.stderr, flush=True)
        code = 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
